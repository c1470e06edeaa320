// SPDX-License-Identifier: GPL-2.0

//! A PI controller in velocity (incremental) form.
//!
//! Each step computes the change of the output, not the output:
//!
//! ```text
//! e(k)  = r(k) - y(k)                        (0 inside the deadband)
//! du(k) = Kp (e(k) - e(k-1)) + Ki e(k)        (then limited to ±slew)
//! u(k)  = clamp(u(k-1) + du(k), min, max)
//! ```
//!
//! The state is the output actually applied, `u(k-1)`, so there is nothing to wind up:
//! while the output sits at a limit the controller does not accumulate error, and it
//! leaves the limit as soon as the error changes sign (a positional PI's integral keeps
//! growing while saturated and holds the output at the limit long after).
//!
//! The first step after [`Pi::new`] or [`Pi::reset_output`] has no previous error, so
//! it has no proportional term: starting a loop (or restarting it with a new set point)
//! never kicks the actuator.
//!
//! # Set-point weight
//!
//! With the proportional term on the error, a set point changed while the loop runs
//! moves the output at once by `Kp Δr`, which adds a zero at `Kp / (Kp + Ki)` to the
//! closed loop from set point to measurement; for a slow plant (`a` near 1) that zero
//! lies close to the poles and the step overshoots well past the design (a plant with
//! `a = 0.95` designed for 10 % overshoot in 20 periods overshoots 25 %). A set-point
//! weight `w` ([`Pi::with_set_point_weight`]) puts `w r - y` in the proportional term
//! instead:
//!
//! ```text
//! du(k) = Kp ((w r(k) - y(k)) - (w r(k-1) - y(k-1))) + Ki e(k)
//! ```
//!
//! The characteristic polynomial, so the poles, the response to load and the absence of
//! windup, do not depend on `w`; with `w = 0` a set-point change acts through the
//! integral term only and the step is the one the poles were placed for. The default,
//! `w = 1`, is the textbook form above. With a constant set point the two are the same.

/// Settings of a [`Pi`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PiConfig {
    /// Proportional gain.
    pub kp: f64,
    /// Integral gain (per period).
    pub ki: f64,
    /// Lowest output.
    pub min: f64,
    /// Highest output.
    pub max: f64,
    /// Largest change of the output in one step (`f64::INFINITY`: none).
    pub slew: f64,
    /// Errors smaller than this (in absolute value) count as 0.
    pub deadband: f64,
}

/// Why a [`PiConfig`] is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// A value is NaN or infinite where a finite one is needed.
    NotFinite,
    /// `min > max`.
    Range,
    /// A negative slew limit or deadband.
    Negative,
    /// A set-point weight outside `[0, 1]`.
    Weight,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ConfigError::NotFinite => "gains and limits must be finite numbers",
            ConfigError::Range => "the lowest output is above the highest",
            ConfigError::Negative => "slew limit and deadband cannot be negative",
            ConfigError::Weight => "the set-point weight must be from 0 to 1",
        })
    }
}

impl std::error::Error for ConfigError {}

impl PiConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let finite = [self.kp, self.ki, self.min, self.max, self.deadband];
        if finite.iter().any(|v| !v.is_finite()) || self.slew.is_nan() {
            return Err(ConfigError::NotFinite);
        }
        if self.min > self.max {
            return Err(ConfigError::Range);
        }
        if self.slew < 0.0 || self.deadband < 0.0 {
            return Err(ConfigError::Negative);
        }
        Ok(())
    }
}

/// Which limit shaped a step's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Saturation {
    /// None.
    None,
    /// The change was cut to the slew limit.
    Slew,
    /// The output was held at `min`.
    Min,
    /// The output was held at `max`.
    Max,
}

impl Saturation {
    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Saturation::None => "none",
            Saturation::Slew => "slew",
            Saturation::Min => "min",
            Saturation::Max => "max",
        }
    }
}

/// Everything one step computed, for the log.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    /// Set point.
    pub set_point: f64,
    /// Measurement.
    pub measurement: f64,
    /// Error after the deadband.
    pub error: f64,
    /// `Kp (e(k) - e(k-1))` (with a set-point weight `w`, `e` is `w r - y` here).
    pub p_term: f64,
    /// `Ki e(k)`.
    pub i_term: f64,
    /// `u(k-1) + p_term + i_term`, before the limits.
    pub unclamped: f64,
    /// The output to apply.
    pub output: f64,
    /// Which limit, if any, shaped `output`.
    pub saturation: Saturation,
}

/// A PI controller in velocity form (see the module documentation).
#[derive(Clone, Debug, PartialEq)]
pub struct Pi {
    cfg: PiConfig,
    /// Weight of the set point in the proportional term.
    weight: f64,
    /// The output applied last.
    output: f64,
    /// The previous proportional error, `w r - y` (after the deadband); `None` before
    /// the first step.
    last_error: Option<f64>,
}

impl Pi {
    /// A controller whose output starts at `initial` (the actuator's value now, for a
    /// bumpless start), clamped to the limits (NaN: the lowest output).
    pub fn new(cfg: PiConfig, initial: f64) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let output = if initial.is_nan() { cfg.min } else { initial };
        Ok(Self {
            cfg,
            weight: 1.0,
            output: output.clamp(cfg.min, cfg.max),
            last_error: None,
        })
    }

    /// The same controller with set-point weight `w` in `[0, 1]` in the proportional
    /// term (see the module documentation; the default is 1).
    pub fn with_set_point_weight(mut self, w: f64) -> Result<Self, ConfigError> {
        if !(0.0..=1.0).contains(&w) {
            return Err(ConfigError::Weight);
        }
        self.weight = w;
        Ok(self)
    }

    /// The set-point weight.
    pub fn set_point_weight(&self) -> f64 {
        self.weight
    }

    /// The settings.
    pub fn config(&self) -> &PiConfig {
        &self.cfg
    }

    /// The output applied last.
    pub fn output(&self) -> f64 {
        self.output
    }

    /// One period: the output for set point `r` and measurement `y`. A NaN or
    /// infinite measurement changes nothing (the output is held).
    pub fn step(&mut self, r: f64, y: f64) -> Step {
        let y_measured = y;
        let raw = r - y;
        if !raw.is_finite() {
            return Step {
                set_point: r,
                measurement: y,
                error: 0.0,
                p_term: 0.0,
                i_term: 0.0,
                unclamped: self.output,
                output: self.output,
                saturation: Saturation::None,
            };
        }
        // Inside the deadband the measurement counts as on the set point.
        let y = if raw.abs() < self.cfg.deadband { r } else { y };
        let e = r - y;
        let ep = self.weight * r - y;
        // The first step has no previous error: no proportional kick.
        let p_term = self.cfg.kp * (ep - self.last_error.unwrap_or(ep));
        let i_term = self.cfg.ki * e;
        let du = p_term + i_term;
        let unclamped = self.output + du;
        let mut saturation = Saturation::None;
        let mut next = unclamped;
        if du.abs() > self.cfg.slew {
            next = self.output + self.cfg.slew.copysign(du);
            saturation = Saturation::Slew;
        }
        if next > self.cfg.max {
            next = self.cfg.max;
            saturation = Saturation::Max;
        } else if next < self.cfg.min {
            next = self.cfg.min;
            saturation = Saturation::Min;
        }
        self.output = next;
        self.last_error = Some(ep);
        Step {
            set_point: r,
            measurement: y_measured,
            error: e,
            p_term,
            i_term,
            unclamped,
            output: next,
            saturation,
        }
    }

    /// Sets the output from outside (the actuator was changed by someone else, or a
    /// period was skipped): the next step continues from `u`, clamped to the limits (a
    /// NaN is ignored), without a proportional term.
    pub fn reset_output(&mut self, u: f64) {
        if !u.is_nan() {
            self.output = u.clamp(self.cfg.min, self.cfg.max);
        }
        self.last_error = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PiConfig {
        PiConfig {
            kp: 0.5,
            ki: 0.2,
            min: 0.0,
            max: 100.0,
            slew: f64::INFINITY,
            deadband: 0.0,
        }
    }

    #[test]
    fn velocity_form_terms() {
        let mut pi = Pi::new(cfg(), 10.0).unwrap();
        // First step: no proportional kick, the integral term only.
        let s = pi.step(5.0, 3.0);
        assert_eq!((s.error, s.p_term, s.i_term), (2.0, 0.0, 0.4));
        assert!((s.output - 10.4).abs() < 1e-12);
        let s = pi.step(5.0, 4.0);
        assert!((s.p_term - 0.5 * (1.0 - 2.0)).abs() < 1e-12);
        assert!((s.i_term - 0.2).abs() < 1e-12);
        assert!((s.output - (10.4 - 0.5 + 0.2)).abs() < 1e-12);
        assert_eq!(s.saturation, Saturation::None);
    }

    #[test]
    fn limits_slew_and_deadband() {
        let mut pi = Pi::new(
            PiConfig {
                slew: 1.0,
                deadband: 0.5,
                ..cfg()
            },
            50.0,
        )
        .unwrap();
        let s = pi.step(100.0, 0.0);
        assert_eq!((s.output, s.saturation), (51.0, Saturation::Slew));
        // Inside the deadband: no change at all.
        let mut pi = Pi::new(
            PiConfig {
                deadband: 0.5,
                ..cfg()
            },
            50.0,
        )
        .unwrap();
        let s = pi.step(10.0, 10.3);
        assert_eq!((s.error, s.output), (0.0, 50.0));
        let mut pi = Pi::new(cfg(), 99.0).unwrap();
        let s = pi.step(100.0, 0.0);
        assert_eq!((s.output, s.saturation), (100.0, Saturation::Max));
        // NaN holds.
        let s = pi.step(1.0, f64::NAN);
        assert_eq!(s.output, 100.0);
    }

    #[test]
    fn bad_settings() {
        let bad = |c: PiConfig| Pi::new(c, 0.0).unwrap_err();
        assert_eq!(
            bad(PiConfig {
                min: 5.0,
                max: 1.0,
                ..cfg()
            }),
            ConfigError::Range
        );
        assert_eq!(
            bad(PiConfig {
                kp: f64::NAN,
                ..cfg()
            }),
            ConfigError::NotFinite
        );
        assert_eq!(
            bad(PiConfig {
                slew: -1.0,
                ..cfg()
            }),
            ConfigError::Negative
        );
        let pi = Pi::new(cfg(), 0.0).unwrap();
        assert_eq!(
            pi.clone().with_set_point_weight(1.5).unwrap_err(),
            ConfigError::Weight
        );
        assert_eq!(
            pi.with_set_point_weight(f64::NAN).unwrap_err(),
            ConfigError::Weight
        );
        // A NaN starting value or reset starts from the lowest output, not from NaN.
        let mut pi = Pi::new(cfg(), f64::NAN).unwrap();
        assert_eq!(pi.output(), 0.0);
        pi.reset_output(f64::NAN);
        assert_eq!(pi.step(1.0, 0.0).output, 0.2);
    }

    #[test]
    fn set_point_weight() {
        let mut one = Pi::new(cfg(), 10.0).unwrap();
        let mut zero = Pi::new(cfg(), 10.0)
            .unwrap()
            .with_set_point_weight(0.0)
            .unwrap();
        // The same measurements under a constant set point: the same outputs.
        for y in [3.0, 4.0, 4.5, 6.0, 5.2] {
            let (a, b) = (one.step(5.0, y), zero.step(5.0, y));
            assert!((a.output - b.output).abs() < 1e-12, "{a:?} {b:?}");
        }
        // A set-point change: weight 1 kicks by Kp times the change, weight 0 does not.
        let (a, b) = (one.step(9.0, 5.2), zero.step(9.0, 5.2));
        assert!((a.p_term - 0.5 * 4.0).abs() < 1e-12, "{a:?}");
        assert!(b.p_term.abs() < 1e-12, "{b:?}");
        assert_eq!(a.i_term, b.i_term);
    }
}
