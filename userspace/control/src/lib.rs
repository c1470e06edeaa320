// SPDX-License-Identifier: GPL-2.0

//! The control library of `qosmgr`, the openqos QoS manager.
//!
//! A feedback loop is designed, not tuned by hand (the ControlWare method of the paper
//! "Kernel Support for Open QoS-Aware Computing"):
//!
//! 1. **Identify** the plant around its operating point as a first-order model
//!    `y(k+1) = a y(k) + b u(k) + c` ([`ident::fit`]): step the actuator `u` (an accept
//!    rate, say) within its limits, record the measurement `y` (a mean delay) every
//!    period, and fit `a`, `b`, `c` by least squares; `R^2` says how much of `y` the
//!    model explains.
//! 2. **Place the poles** ([`design::pi_gains`]): from a settling time (periods) and a
//!    largest overshoot, the closed-loop poles `r e^{±jθ}`, and from them the gains of a
//!    PI controller in velocity form ([`pi::Pi`]) for that model.
//! 3. **Check robustness** ([`sim::check_robust`]): the design must stay stable, by its
//!    closed-loop poles and in simulation, when the plant's gain `b` is halved or
//!    doubled (real servers drift from any model); the report also gives the whole
//!    interval of factors of `b` that keep the loop stable ([`design::stable_b_range`]).
//!    A plant that answers a period or more late (a queue's mean delay) is identified
//!    and designed with its dead time ([`deadtime`]). The identification's residuals
//!    measure the disturbance no loop can undo; [`noise`] gives the spread a design
//!    leaves on the measurement and picks the settling time that leaves the least.
//! 4. **Run**: every period, [`pi::Pi::step`] turns set point and measurement into the
//!    actuator's next value, within output and slew limits, without integrator windup,
//!    and reports every term for the log. [`split::SplitRange`] drives several actuators
//!    in sequence from one output; [`quant::Quantizer`] applies a real output to an
//!    actuator that takes whole numbers without losing its fraction.
//!
//! The formulas, their derivation and the figures the tests pin are in the modules'
//! documentation and in the crate's `README.md`. Everything is `f64` arithmetic on the
//! host, with no dependency; [`pi::Pi::step`] and [`split::SplitRange::apply_into`] do
//! not allocate.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod deadtime;
pub mod design;
pub mod ident;
pub mod noise;
pub mod pi;
pub mod quant;
pub mod sim;
pub mod split;
