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
//! singular system ([`IdentError::NotExciting`]). `R^2` is computed on the one-step
//! predictions.

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

/// Fits the model to one-step samples `(y(k), u(k), y(k+1))`, for data with gaps (a
/// period without enough connections to measure breaks the sequence, not the fit).
pub fn fit_pairs(pairs: &[(f64, f64, f64)]) -> Result<Model, IdentError> {
    if pairs.len() < MIN_SAMPLES {
        return Err(IdentError::TooFew);
    }
    if pairs
        .iter()
        .any(|(y, u, y1)| !y.is_finite() || !u.is_finite() || !y1.is_finite())
    {
        return Err(IdentError::NotFinite);
    }
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
    Ok(Model {
        a,
        b,
        c,
        r2,
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

    #[test]
    fn recovers_a_and_b_from_noisy_data() {
        for (a, b, c) in [
            (0.6f64, 2.0f64, 50.0f64),
            (0.85, -0.4, 300.0),
            (0.2, 10.0, 0.0),
        ] {
            let u: Vec<f64> = prbs(500)
                .into_iter()
                .map(|h| if h { 120.0 } else { 80.0 })
                .collect();
            // Noise of 5 % of the output's swing.
            let swing = (b * 40.0 / (1.0 - a)).abs();
            let y = simulate(a, b, c, &u, 0.05 * swing, 7);
            let m = fit(&y, &u).unwrap();
            eprintln!(
                "ident: a {a} -> {:.4}, b {b} -> {:.4}, R2 {:.3}",
                m.a, m.b, m.r2
            );
            assert!((m.a - a).abs() < 0.05, "a {a}: {m:?}");
            assert!((m.b - b).abs() < 0.05 * b.abs(), "b {b}: {m:?}");
            assert!(m.r2 > 0.8, "{m:?}");
            assert_eq!(m.samples, 499);
        }
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
}
