// SPDX-License-Identifier: GPL-2.0

//! Least-squares identification of `y(k+1) = a y(k) + b u(k) + c`.
//!
//! Given the measurements `y(0..n)` and the actuator values `u(0..n)` applied in the same
//! periods (`u(k)` in force while `y(k+1)` was measured), the parameters minimize the sum
//! of squared one-step prediction errors over `k = 0..n-1`. They solve the normal
//! equations `(Φᵀ Φ) θ = Φᵀ Y` with `Φ` the rows `[y(k), u(k), 1]`, by Gaussian
//! elimination with partial pivoting. The offset `c` absorbs the operating point (the
//! measurement is not 0 when the actuator is); without it the model is forced through
//! the origin, which real servers do not do.
//!
//! The fit is only as good as the input's excitation: an actuator held constant gives a
//! singular system ([`IdentError::NotExciting`]). A pseudo-random binary sequence
//! ([`prbs`]) between two actuator levels excites all frequencies. `R^2` is computed on
//! the one-step predictions.
//!
//! Least squares is unbiased when the noise enters the plant (`y(k+1) = a y(k) +
//! b u(k) + c + n(k)`, white `n`). Noise on the measurement only (`y_m = y + v`) makes
//! the regressor `y(k)` noisy and biases `a` towards 0 (`b` much less): with 500 samples
//! of a PRBS and noise of 5 % of the output's standard deviation the bias of `a` is
//! under 0.003; at 20 % it reaches 0.02 to 0.04 for `a` of 0.5 to 0.95. Measure over
//! periods long enough for the mean to be steady, or check the design's margin
//! ([`crate::sim::Report::b_range`]) rather than trust the last digit.

/// An identified model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Model {
    /// Pole of the plant.
    pub a: f64,
    /// Gain of the actuator.
    pub b: f64,
    /// Offset (operating point).
    pub c: f64,
    /// Share of the variance of `y(k+1)` the model explains (1: all of it).
    pub r2: f64,
    /// Standard deviation of the one-step prediction errors (the residuals, over the
    /// degrees of freedom the fit leaves): the disturbance a period brings that no
    /// model of the actuator explains, in the measurement's unit. It bounds how closely
    /// any loop at this period can hold the measurement ([`crate::noise`]).
    pub sigma: f64,
    /// Samples (one-step pairs) used.
    pub samples: usize,
}

/// Why a fit failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentError {
    /// The two sequences differ in length.
    Length,
    /// Fewer pairs than [`MIN_SAMPLES`].
    TooFew,
    /// A value is NaN or infinite.
    NotFinite,
    /// The data cannot tell the parameters apart (the actuator did not move, or moved
    /// in lockstep with the measurement).
    NotExciting,
}

impl core::fmt::Display for IdentError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            IdentError::Length => "measurements and actuator values differ in number",
            IdentError::TooFew => "too few samples to fit a model (at least 8 periods)",
            IdentError::NotFinite => "a sample is not a finite number",
            IdentError::NotExciting => {
                "the samples cannot tell a, b and c apart (did the actuator move?)"
            }
        })
    }
}

impl std::error::Error for IdentError {}

/// Fewest one-step pairs a fit takes.
pub const MIN_SAMPLES: usize = 8;

/// Fits `y(k+1) = a y(k) + b u(k) + c` to `y` and `u` (same length, at least
/// `MIN_SAMPLES + 1`).
pub fn fit(y: &[f64], u: &[f64]) -> Result<Model, IdentError> {
    if y.len() != u.len() {
        return Err(IdentError::Length);
    }
    let pairs: Vec<(f64, f64, f64)> = (1..y.len()).map(|k| (y[k - 1], u[k - 1], y[k])).collect();
    fit_pairs(&pairs)
}

/// Refuses too few samples or a non-finite one.
fn usable(pairs: &[(f64, f64, f64)]) -> Result<(), IdentError> {
    if pairs.len() < MIN_SAMPLES {
        return Err(IdentError::TooFew);
    }
    if pairs
        .iter()
        .any(|(y, u, y1)| !y.is_finite() || !u.is_finite() || !y1.is_finite())
    {
        return Err(IdentError::NotFinite);
    }
    Ok(())
}

/// The share of the variance of `y(k+1)` that the one-step predictions of
/// `y(k+1) = a y(k) + b u(k) + c` explain (1 if `y(k+1)` does not vary).
/// `R^2` of the one-step predictions and the residuals' standard deviation, for a fit
/// of `params` parameters.
fn goodness(pairs: &[(f64, f64, f64)], a: f64, b: f64, c: f64, params: usize) -> (f64, f64) {
    let my1 = pairs.iter().map(|p| p.2).sum::<f64>() / pairs.len() as f64;
    let (mut ss_res, mut ss_tot) = (0.0, 0.0);
    for &(y, u, y1) in pairs {
        ss_res += (y1 - (a * y + b * u + c)).powi(2);
        ss_tot += (y1 - my1).powi(2);
    }
    let r2 = if ss_tot > 0.0 {
        1.0 - ss_res / ss_tot
    } else {
        1.0
    };
    // `usable` guarantees more pairs than parameters.
    let dof = pairs.len().saturating_sub(params).max(1);
    (r2, (ss_res / dof as f64).sqrt())
}

/// Fits the model to one-step samples `(y(k), u(k), y(k+1))`, for data with gaps (a
/// period without enough connections to measure breaks the sequence, not the fit).
pub fn fit_pairs(pairs: &[(f64, f64, f64)]) -> Result<Model, IdentError> {
    usable(pairs)?;
    let n = pairs.len() as f64;
    // Normal equations with the regressors centred (for conditioning): the offset is
    // recovered afterwards from the means.
    let my = pairs.iter().map(|p| p.0).sum::<f64>() / n;
    let mu = pairs.iter().map(|p| p.1).sum::<f64>() / n;
    let my1 = pairs.iter().map(|p| p.2).sum::<f64>() / n;
    let mut m = [[0.0f64; 3]; 2];
    for &(y, u, y1) in pairs {
        let (p, q, t) = (y - my, u - mu, y1 - my1);
        m[0][0] += p * p;
        m[0][1] += p * q;
        m[1][1] += q * q;
        m[0][2] += p * t;
        m[1][2] += q * t;
    }
    m[1][0] = m[0][1];
    let scale = m[0][0].abs().max(m[1][1].abs());
    let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
    if scale == 0.0 || det.abs() <= 1e-12 * scale * scale {
        return Err(IdentError::NotExciting);
    }
    let a = (m[0][2] * m[1][1] - m[0][1] * m[1][2]) / det;
    let b = (m[0][0] * m[1][2] - m[1][0] * m[0][2]) / det;
    let c = my1 - a * my - b * mu;
    let (r2, sigma) = goodness(pairs, a, b, c, 3);
    Ok(Model {
        a,
        b,
        c,
        r2,
        sigma,
        samples: pairs.len(),
    })
}

/// Fits the integrating model `y(k+1) = y(k) + b u(k) + c` (`a` fixed at 1) to one-step
/// samples `(y(k), u(k), y(k+1))`: a queue's delay near a set point integrates the
/// difference between arrivals and service, which the actuator moves, and a free `a`
/// fitted to data that touch the queue's floor (empty) comes out below 1 and designs a
/// loop for a plant that is not there. `b` and `c` are the least-squares line of
/// `y(k+1) - y(k)` over `u(k)`; `R^2` is that of the one-step predictions of `y(k+1)`,
/// as for [`fit_pairs`], so the two fits compare.
pub fn fit_integrating_pairs(pairs: &[(f64, f64, f64)]) -> Result<Model, IdentError> {
    usable(pairs)?;
    let n = pairs.len() as f64;
    let mu = pairs.iter().map(|p| p.1).sum::<f64>() / n;
    let mz = pairs.iter().map(|p| p.2 - p.0).sum::<f64>() / n;
    let (mut suu, mut suz) = (0.0, 0.0);
    for &(y, u, y1) in pairs {
        suu += (u - mu) * (u - mu);
        suz += (u - mu) * (y1 - y - mz);
    }
    if suu <= 1e-12 * mu.abs().max(1.0).powi(2) * n {
        return Err(IdentError::NotExciting);
    }
    let b = suz / suu;
    let c = mz - b * mu;
    let (r2, sigma) = goodness(pairs, 1.0, b, c, 2);
    Ok(Model {
        a: 1.0,
        b,
        c,
        r2,
        sigma,
        samples: pairs.len(),
    })
}

/// A pseudo-random binary sequence (a maximal-length 7-bit LFSR, period 127) for
/// identification: `true` for the high actuator level. Deterministic.
pub fn prbs(len: usize) -> Vec<bool> {
    let mut s: u8 = 0x5a;
    (0..len)
        .map(|_| {
            let bit = ((s >> 6) ^ (s >> 5)) & 1;
            s = ((s << 1) | bit) & 0x7f;
            bit == 1
        })
        .collect()
}

/// The input of a relay experiment (Åström and Hägglund, 1984): the high actuator level
/// while the measurement is below `set_point`, the low one from the period it reaches
/// it; `last` again when a period has no measurement.
///
/// A PRBS between two fixed levels suits a plant with a steady state at each level. A
/// queue fed open-loop has none near its balance: the delay grows for as long as the
/// actuator leaves the server less capacity than the class's arrival rate, and falls to
/// nothing for as long as it leaves more, so a PRBS whose two levels lie on one side of
/// the balance drives the queue to empty or to overflow and the fit learns the drift.
/// The relay keeps the measurement oscillating around the set point whatever the
/// balance (as long as it lies between the levels), in the region the loop will work
/// in, and its square wave excites the plant enough for [`fit_pairs`]. `raises` is the
/// sign the plant must have: whether raising the actuator raises the measurement
/// (`b > 0`: the delay of one class against the rate admitted for the others); if it
/// lowers it, the relay takes the high level while the measurement is above the set
/// point instead.
pub fn relay(measured: Option<f64>, set_point: f64, last: bool, raises: bool) -> bool {
    match measured {
        Some(y) => (y < set_point) == raises,
        None => last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::Noise;

    fn simulate(a: f64, b: f64, c: f64, u: &[f64], noise: f64, seed: u64) -> Vec<f64> {
        let mut n = Noise::new(seed);
        let mut y = vec![0.0; u.len()];
        // Start at the steady state of the first input.
        y[0] = (b * u[0] + c) / (1.0 - a);
        for k in 0..u.len() - 1 {
            y[k + 1] = a * y[k] + b * u[k] + c + noise * n.sample();
        }
        y
    }

    /// The actuator levels: a PRBS between 80 and 120.
    fn input(len: usize) -> Vec<f64> {
        prbs(len)
            .into_iter()
            .map(|h| if h { 120.0 } else { 80.0 })
            .collect()
    }

    /// Standard deviation.
    fn sd(v: &[f64]) -> f64 {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    }

    #[test]
    fn recovers_a_and_b_from_noisy_data() {
        // 500 periods of a PRBS; uniform noise with a standard deviation of 5 % of that
        // of the noise-free output, in the plant or on the measurement; 20 seeds each.
        let u = input(500);
        for (a, b, c) in [
            (0.0f64, 1.0f64, 20.0f64),
            (0.6, 2.0, 50.0),
            (0.85, -0.4, 300.0),
            (0.95, 3.0, 0.0),
        ] {
            let clean = simulate(a, b, c, &u, 0.0, 0);
            // Uniform in [-h, h) has a standard deviation of h / sqrt(3).
            let h = 0.05 * sd(&clean) * 3f64.sqrt();
            let (mut worst_a, mut worst_b, mut worst_r2) = (0.0f64, 0.0f64, 1.0f64);
            for seed in 0..20 {
                let in_plant = simulate(a, b, c, &u, h, seed);
                let mut n = Noise::new(seed + 1000);
                let on_measurement: Vec<f64> = clean.iter().map(|y| y + h * n.sample()).collect();
                for y in [in_plant, on_measurement] {
                    let m = fit(&y, &u).unwrap();
                    assert_eq!(m.samples, 499);
                    worst_a = worst_a.max((m.a - a).abs());
                    worst_b = worst_b.max(((m.b - b) / b).abs());
                    worst_r2 = worst_r2.min(m.r2);
                }
            }
            eprintln!(
                "ident a {a} b {b}: worst |a error| {worst_a:.4}, worst |b error| {:.2} %, lowest R^2 {worst_r2:.3}",
                worst_b * 100.0
            );
            assert!(worst_a < 0.02, "a {a}: {worst_a}");
            assert!(worst_b < 0.04, "b {b}: {worst_b}");
            assert!(worst_r2 > 0.95, "{worst_r2}");
        }
    }

    #[test]
    fn offset_and_gaps() {
        // The offset is recovered, and a sequence with gaps (every 7th period lost)
        // fits as well through fit_pairs.
        let u = input(300);
        let y = simulate(0.7, -1.5, 400.0, &u, 0.0, 0);
        let m = fit(&y, &u).unwrap();
        assert!((m.a - 0.7).abs() < 1e-9 && (m.b + 1.5).abs() < 1e-9);
        assert!((m.c - 400.0).abs() < 1e-6 && (m.r2 - 1.0).abs() < 1e-9);
        assert!(m.sigma < 1e-6, "{}", m.sigma);
        let pairs: Vec<(f64, f64, f64)> = (0..299)
            .filter(|k| k % 7 != 3)
            .map(|k| (y[k], u[k], y[k + 1]))
            .collect();
        let g = fit_pairs(&pairs).unwrap();
        assert_eq!(g.samples, pairs.len());
        assert!((g.a - 0.7).abs() < 1e-9 && (g.b + 1.5).abs() < 1e-9);
    }

    #[test]
    fn refuses_what_cannot_be_fitted() {
        let u = vec![100.0; 50];
        let y = simulate(0.5, 1.0, 0.0, &u, 0.0, 1);
        assert_eq!(fit(&y, &u), Err(IdentError::NotExciting));
        assert_eq!(fit(&y[..5], &u[..5]), Err(IdentError::TooFew));
        assert_eq!(fit(&y, &u[..10]), Err(IdentError::Length));
        let mut bad = y.clone();
        bad[3] = f64::NAN;
        assert_eq!(fit(&bad, &u), Err(IdentError::NotFinite));
    }

    #[test]
    fn prbs_is_balanced_and_periodic() {
        let s = prbs(254);
        assert_eq!(&s[..127], &s[127..]);
        let ones = s[..127].iter().filter(|b| **b).count();
        assert_eq!(ones, 64);
    }

    #[test]
    fn relay_identifies_an_integrating_queue() {
        // A queue fed open-loop: each period the delay grows by b (u - u0), where u0 is
        // the balance (unknown to the experiment), and cannot fall below 0. The two
        // actuator levels lie on either side of u0. The relay holds the queue around the
        // set point and recovers a = 1 and b; a PRBS between the same levels (their mean
        // below the balance) drains the queue to its floor and fits a pole of 0.91.
        let (b, u0, sp, lo, hi) = (40.0, 11.0, 1000.0, 6.0, 14.0);
        let step = |y: f64, u: f64, n: f64| (y + b * (u - u0) + n).max(0.0);
        for seed in 0..20 {
            let mut noise = Noise::new(seed);
            let (mut y, mut high) = (0.0, true);
            let mut pairs = Vec::new();
            for _ in 0..40 {
                high = relay(Some(y), sp, high, true);
                let u = if high { hi } else { lo };
                let y1 = step(y, u, 15.0 * noise.sample());
                pairs.push((y, u, y1));
                y = y1;
            }
            // Drop the climb from the empty queue to the set point, as qosmgr's
            // experiment starts near it.
            let from = pairs.iter().position(|p| p.0 >= sp).unwrap();
            let m = fit_pairs(&pairs[from..]).unwrap();
            assert!((m.a - 1.0).abs() < 0.05, "seed {seed}: a {}", m.a);
            assert!((m.b - b).abs() < 0.1 * b, "seed {seed}: b {}", m.b);
            // The residuals' spread is the disturbance's: uniform in [-15, 15), a
            // standard deviation of 15 / sqrt(3) = 8.66.
            let sd = 15.0 / 3f64.sqrt();
            assert!(
                (m.sigma - sd).abs() < 0.25 * sd,
                "seed {seed}: sigma {}",
                m.sigma
            );
            // Never at the floor once it got there: the fit saw only the linear region.
            assert!(pairs[from..].iter().all(|p| p.2 > 0.0));
        }
        // The same plant under a PRBS between the same levels, from the same start.
        let mut noise = Noise::new(7);
        let (mut y, mut pairs) = (0.0, Vec::new());
        for h in prbs(40) {
            let u = if h { hi } else { lo };
            let y1 = step(y, u, 15.0 * noise.sample());
            pairs.push((y, u, y1));
            y = y1;
        }
        let zeros = pairs.iter().filter(|p| p.2 == 0.0).count();
        let m = fit_pairs(&pairs).unwrap();
        eprintln!(
            "PRBS: empty in {zeros} of 40 periods, a {:.3} b {:.1}",
            m.a, m.b
        );
        assert!(
            zeros > 0 && (m.a - 1.0).abs() > 0.05,
            "PRBS: a {} b {}",
            m.a,
            m.b
        );
        assert!(!relay(None, sp, false, true));
        assert!(relay(None, sp, true, true));
        assert!(!relay(Some(sp), sp, true, true));
        // A plant whose measurement falls as the actuator rises (the loop's own port):
        // the high level while the measurement is above the set point.
        assert!(relay(Some(sp + 1.0), sp, false, false));
        assert!(!relay(Some(sp - 1.0), sp, true, false));
        assert!(relay(None, sp, true, false));
    }

    #[test]
    fn integrating_fit_recovers_b_and_c() {
        // A queue: y(k+1) = y(k) + b u(k) + c with noise, driven by a relay-like input
        // around its balance (u = -c/b).
        let (b, c) = (-40.0, 600.0);
        let mut noise = crate::sim::Noise::new(7);
        let mut y = 2000.0;
        let mut pairs = Vec::new();
        for k in 0..200 {
            let u = if (k / 3) % 2 == 0 { 10.0 } else { 20.0 };
            let y1 = y + b * u + c + 20.0 * noise.sample();
            pairs.push((y, u, y1));
            y = y1;
        }
        let m = fit_integrating_pairs(&pairs).unwrap();
        assert_eq!(m.a, 1.0);
        assert!((m.b - b).abs() < 0.05 * b.abs(), "b {}", m.b);
        assert!((m.c - c).abs() < 0.05 * c.abs(), "c {}", m.c);
        assert!(m.r2 > 0.9, "R^2 {}", m.r2);
        // A constant input cannot tell b from c.
        let flat: Vec<_> = pairs.iter().map(|&(y, _, y1)| (y, 5.0, y1)).collect();
        assert_eq!(fit_integrating_pairs(&flat), Err(IdentError::NotExciting));
    }
}
