// SPDX-License-Identifier: GPL-2.0

//! The configuration file: global settings and the loops, in TOML.
//!
//! ```toml
//! period = "1s"
//! lease_periods = 5
//! status_file = "/run/qosmgr/status.json"
//!
//! [[loop]]
//! name = "premium"
//! type = "delay"
//! port = 8080          # the mean queueing delay of this port is held ...
//! set_point = "200ms"  # ... here,
//! group = 2            # by the accept rate of this accept-rate group (other classes);
//!                      # or: group = 6 with member = 8081 (a ratio group member's
//!                      # weight), or rule = 80 with condition = 1 (a probabilistic
//!                      # condition's weight, 1/10000): see [`Actuator`]
//! min = 2              # its lowest rate (the other classes' floor)
//! max = 200            # its highest rate
//! safe = 200           # the rate it gets back on exit, or when the sensor is lost
//! slew = 40            # largest change in one period
//! deadband = "5ms"
//! min_samples = 5      # a period with fewer accepted connections holds the output
//! measure = "oldest"   # the wait of the oldest connection queued now; or "queue"
//!                      # (Little's law), or "mean" (of the period's accepted ones)
//! rate_periods = 2     # the queue measure's arrival rate over the last 2 periods
//! kp = 0.05            # gains: written by `qosmgr design`
//! ki = 0.02
//!
//! [loop.model]         # written by `qosmgr identify`
//! a = 0.5
//! b = 2.0
//! c = 10.0
//! r2 = 0.9
//! sigma = 40.0         # the fit's residuals (ms): the disturbance a period
//! delay = 0            # dead time, periods
//!
//! [[loop]]             # the paper's Figure 10
//! name = "web-cpu"
//! type = "utilization"
//! # The CPU time of these cgroup v2 directories (their cpu.stat usage_usec, children
//! # included) over the period, per CPU, in percent, is held ...
//! cgroups = ["/sys/fs/cgroup/web-full", "/sys/fs/cgroup/web-degraded"]
//! set_point = 30.0     # ... here (percent, above 0 and at most 100);
//! cpus = 1             # CPUs the usage is divided by (default: the online CPUs)
//! # by a split range: the controller's output v (0 to 1) moves the first stage from
//! # `from` to `to`, then the second, and so on (back in reverse order as v falls).
//! # Raising v must lower the utilization. Each stage names its actuator as a delay
//! # loop does, and is set back to `safe` on exit or when a sensor or actuator fails.
//! stages = [
//!   # the share sent to degraded content (a probabilistic condition, 1/10000) ...
//!   { rule = 80, condition = 1, from = 1, to = 10000, safe = 1 },
//!   # ... then the degraded instance's accept rate (admission control)
//!   { group = 3, from = 200, to = 5, safe = 200 },
//! ]
//! slew = 0.1           # largest change of v in one period (default: no limit)
//! deadband = 1.0       # errors below 1 point count as none (default: 0)
//! kp = 0.004           # gains (v per point of error; ki < 0, as the plant's b is):
//! ki = -0.012          # written by `qosmgr design`
//!
//! [[loop]]             # relative differentiation
//! name = "gold-vs-basic"
//! type = "ratio"
//! port = 8080          # the delay of this port over ...
//! relative_to = 8081   # ... the delay of this one is held ...
//! set_point = 0.5      # ... here (gold waits half as long as basic),
//! group = 4            # by gold's weight in the accept-ratio group of both
//! member = 8080
//! min = 1
//! max = 20
//! safe = 1
//! measure = "oldest"   # as a delay loop's, for both ports
//! kp = -2.0            # gains (weight per unit of the ratio's error): `qosmgr design`
//! ki = -4.0
//! ```

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

/// The whole file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Period of every loop.
    #[serde(with = "humantime_serde", default = "default_period")]
    pub period: Duration,
    /// The limits set last this many periods unless renewed (every period).
    #[serde(default = "default_lease_periods")]
    pub lease_periods: u32,
    /// Where `run` writes the loops' state for `status`.
    #[serde(default = "default_status_file")]
    pub status_file: String,
    /// Address (`HOST:PORT`) where `run` serves the loops' state in the Prometheus text
    /// format on `/metrics`; none by default.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// The loops.
    #[serde(rename = "loop", default)]
    pub loops: Vec<LoopConfig>,
}

fn default_period() -> Duration {
    Duration::from_secs(1)
}

fn default_lease_periods() -> u32 {
    5
}

/// The default place of the status file.
pub const STATUS_FILE: &str = "/run/qosmgr/status.json";

fn default_status_file() -> String {
    STATUS_FILE.into()
}

/// What a loop holds at its set point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopType {
    /// The mean connection delay (end of handshake to `accept()`) of one port, by the
    /// accept rate of a group of other ports.
    Delay,
    /// The CPU utilization of a set of cgroups, by a split range of actuators.
    Utilization,
    /// The ratio of two ports' connection delays (relative differentiation), by one
    /// actuator (typically a member's weight in an accept-ratio group of both).
    Ratio,
}

impl LoopType {
    /// Its name in the configuration (`type`).
    pub fn name(self) -> &'static str {
        match self {
            LoopType::Delay => "delay",
            LoopType::Utilization => "utilization",
            LoopType::Ratio => "ratio",
        }
    }

    /// The unit of its set point and measurement.
    pub fn unit(self) -> &'static str {
        match self {
            LoopType::Delay => "ms",
            LoopType::Utilization => "%",
            LoopType::Ratio => "",
        }
    }

    /// What it measures, in words.
    pub fn quantity(self) -> &'static str {
        match self {
            LoopType::Delay => "delay",
            LoopType::Utilization => "utilization",
            LoopType::Ratio => "delay ratio",
        }
    }
}

/// A first-order model of the plant, from `qosmgr identify`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Pole.
    pub a: f64,
    /// Gain: the measurement's change per unit of the controller's output (for a delay
    /// loop, milliseconds of delay per connection per second; for a utilization loop,
    /// percentage points per unit of the split range's output, negative).
    pub b: f64,
    /// Offset.
    #[serde(default)]
    pub c: f64,
    /// Fit quality.
    #[serde(default)]
    pub r2: Option<f64>,
    /// The fit's residuals, one standard deviation: the disturbance a period.
    #[serde(default)]
    pub sigma: Option<f64>,
    /// Dead time: whole periods before the actuator shows in the measurement.
    #[serde(default)]
    pub delay: usize,
}

/// One loop, of the type its `type` key names.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum LoopConfig {
    /// `type = "delay"`.
    Delay(DelayLoop),
    /// `type = "utilization"`.
    Utilization(UtilizationLoop),
    /// `type = "ratio"`.
    Ratio(RatioLoop),
}

/// A loop that holds a port's connection delay.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DelayLoop {
    /// Unique name.
    pub name: String,
    /// The measured port.
    pub port: u16,
    /// The delay to hold.
    #[serde(with = "humantime_serde")]
    pub set_point: Duration,
    /// Which delay: the mean of the connections accepted in the period (default), or
    /// the delay the queue holds now for a new arrival.
    #[serde(default)]
    pub measure: Measure,
    /// The group it drives: an accept-rate group (its rate), or with `member` an
    /// accept-ratio group (that member's weight).
    #[serde(default)]
    pub group: Option<u32>,
    /// The member port of a ratio group whose weight the loop drives.
    #[serde(default)]
    pub member: Option<u16>,
    /// The probabilistic rule (its incoming port) whose condition's weight the loop
    /// drives (with `condition`).
    #[serde(default)]
    pub rule: Option<u16>,
    /// The condition of `rule` (1-based, as tcpchains lists them).
    #[serde(default)]
    pub condition: Option<u32>,
    /// Lowest value of the actuator (a rate, a weight, a weight in 1/10000).
    pub min: u64,
    /// Highest value.
    pub max: u64,
    /// The value on exit or sensor loss.
    pub safe: u64,
    /// Largest change of the actuator in one period (default: no limit).
    #[serde(default)]
    pub slew: Option<f64>,
    /// Errors smaller than this count as none.
    #[serde(with = "humantime_serde", default)]
    pub deadband: Option<Duration>,
    /// Fewest accepted connections in a period for a measurement.
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// Periods over which the queue measure takes its arrival rate, and the oldest
    /// measure its interval between accepts (default 1): with short periods and few
    /// connections a period, a longer window steadies them while the count of waiting
    /// connections, or the oldest one's wait, stays the latest.
    #[serde(default = "default_rate_periods")]
    pub rate_periods: usize,
    /// Proportional gain (rate per millisecond of error).
    pub kp: Option<f64>,
    /// Integral gain.
    pub ki: Option<f64>,
    /// The identified model.
    pub model: Option<ModelConfig>,
}

/// A loop that holds the CPU utilization of a set of cgroups with a split range of
/// actuators (the paper's Figure 10: more clients to degraded content first, then fewer
/// of them admitted).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UtilizationLoop {
    /// Unique name.
    pub name: String,
    /// The cgroup v2 directories whose CPU time (`cpu.stat`'s `usage_usec`, children
    /// included) is summed.
    pub cgroups: Vec<PathBuf>,
    /// The utilization to hold, percent (of `cpus` CPUs).
    pub set_point: f64,
    /// CPUs the usage is divided by (default: the online CPUs, read at start).
    #[serde(default)]
    pub cpus: Option<f64>,
    /// The actuators, in the order the output moves them.
    pub stages: Vec<StageConfig>,
    /// Largest change of the output (0 to 1) in one period (default: no limit).
    #[serde(default)]
    pub slew: Option<f64>,
    /// Errors smaller than this, percentage points, count as none.
    #[serde(default)]
    pub deadband: Option<f64>,
    /// Proportional gain (output per percentage point of error).
    pub kp: Option<f64>,
    /// Integral gain.
    pub ki: Option<f64>,
    /// The identified model.
    pub model: Option<ModelConfig>,
}

/// A loop that holds the ratio of two ports' connection delays (the survey's relative
/// differentiation: one class waits a fixed fraction of another's wait, whatever the
/// load), by one actuator named as a delay loop's is. It measures both ports as a delay
/// loop measures its one (`measure`, `min_samples`, `rate_periods` apply to both); a
/// period in which either gives no measurement, or the other port's delay is 0, holds
/// the output.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RatioLoop {
    /// Unique name.
    pub name: String,
    /// The port whose delay is the numerator.
    pub port: u16,
    /// The port whose delay is the denominator.
    pub relative_to: u16,
    /// The ratio to hold (above 0).
    pub set_point: f64,
    /// Which delay of each port (as a delay loop's).
    #[serde(default)]
    pub measure: Measure,
    /// The group it drives (see [`DelayLoop::group`]).
    #[serde(default)]
    pub group: Option<u32>,
    /// The member port of a ratio group whose weight the loop drives.
    #[serde(default)]
    pub member: Option<u16>,
    /// The probabilistic rule whose condition's weight the loop drives.
    #[serde(default)]
    pub rule: Option<u16>,
    /// The condition of `rule` (1-based).
    #[serde(default)]
    pub condition: Option<u32>,
    /// Lowest value of the actuator.
    pub min: u64,
    /// Highest value.
    pub max: u64,
    /// The value on exit or sensor loss.
    pub safe: u64,
    /// Largest change of the actuator in one period (default: no limit).
    #[serde(default)]
    pub slew: Option<f64>,
    /// Errors of the ratio smaller than this count as none (default: 0).
    #[serde(default)]
    pub deadband: Option<f64>,
    /// Fewest accepted connections a period on each port for a measurement.
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// As a delay loop's, for both ports.
    #[serde(default = "default_rate_periods")]
    pub rate_periods: usize,
    /// Proportional gain (actuator units per unit of the ratio's error).
    pub kp: Option<f64>,
    /// Integral gain.
    pub ki: Option<f64>,
    /// The identified model.
    pub model: Option<ModelConfig>,
}

/// One stage of a utilization loop's split range: an actuator (named by the keys of a
/// delay loop's) and the values it takes at the start and at the end of its range.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// An accept-rate group (its rate), or with `member` an accept-ratio group.
    #[serde(default)]
    pub group: Option<u32>,
    /// The member port of a ratio group whose weight the stage drives.
    #[serde(default)]
    pub member: Option<u16>,
    /// The probabilistic rule (its incoming port) whose condition's weight the stage
    /// drives (with `condition`).
    #[serde(default)]
    pub rule: Option<u16>,
    /// The condition of `rule` (1-based).
    #[serde(default)]
    pub condition: Option<u32>,
    /// The actuator's value while the output is below and at the start of the stage.
    pub from: u64,
    /// Its value at the end of the stage and above.
    pub to: u64,
    /// Its value on exit or when a sensor or an actuator fails.
    pub safe: u64,
}

fn default_min_samples() -> u64 {
    5
}

fn default_rate_periods() -> usize {
    1
}

/// Which delay a `delay` loop holds.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Measure {
    /// The mean delay (end of handshake to `accept()`) of the connections accepted in
    /// the period, from the meter's delay sum. It answers the actuator a period late:
    /// those connections waited through the period before.
    #[default]
    Mean,
    /// The delay the queue holds now, by Little's law: the connections waiting at the
    /// end of the period over their arrival rate (accepted plus the change of the
    /// waiting) over the last `rate_periods` periods. No dead time, and less noise when
    /// few connections are accepted a period; it predicts the mean, so a loop on it
    /// holds the mean only as well as the prediction holds.
    Queue,
    /// The delay the queue holds now, read rather than estimated: how long the oldest
    /// connection waiting at the end of the period has waited (the meter's `oldest-ns`;
    /// 0 when none waits), plus half the interval between accepts over the last
    /// `rate_periods` periods (read at an instant, the head's wait falls short of the
    /// delay it is accepted with by the time to the next accept). No dead time, no
    /// estimate's noise, and a value every period however few connections were
    /// accepted (`min_samples` does not apply). In a FIFO queue the next connections'
    /// delays follow it, so a loop on it holds the mean.
    Oldest,
}

impl Measure {
    /// Its name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Measure::Mean => "mean",
            Measure::Queue => "queue",
            Measure::Oldest => "oldest",
        }
    }
}

/// What a loop drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actuator {
    /// The rate (connections/s) of an accept-rate group; set with a kernel lease.
    Rate {
        /// The group.
        group: u32,
    },
    /// The weight of one member port of an accept-ratio group (no lease: the kernel
    /// has none for weights).
    Weight {
        /// The group.
        group: u32,
        /// The member port.
        port: u16,
    },
    /// The weight, in 1/10000, of one condition of a probabilistic rule (no lease).
    Share {
        /// The rule's incoming port.
        rule: u16,
        /// The condition, 1-based.
        condition: u32,
    },
}

impl Actuator {
    /// Whether the kernel restores the value by itself when the manager stops
    /// renewing it.
    pub fn leased(self) -> bool {
        matches!(self, Actuator::Rate { .. })
    }

    /// The kernel object it changes: `(true, port)` for a rule, `(false, id)` for a
    /// group. Two loops on one object would fight.
    pub fn owner(self) -> (bool, u32) {
        match self {
            Actuator::Rate { group } | Actuator::Weight { group, .. } => (false, group),
            Actuator::Share { rule, .. } => (true, u32::from(rule)),
        }
    }

    /// The most the actuator can be set to.
    pub fn top(self) -> u64 {
        match self {
            Actuator::Rate { .. } => u64::MAX,
            Actuator::Weight { .. } => u64::from(u16::MAX),
            Actuator::Share { .. } => 10_000,
        }
    }

    /// Picks the actuator from a loop's or a stage's keys (see [`Actuator`]); `who`
    /// names the loop or the stage in the messages.
    fn from_keys(
        who: &str,
        group: Option<u32>,
        member: Option<u16>,
        rule: Option<u16>,
        condition: Option<u32>,
    ) -> Result<Self> {
        match (group, member, rule, condition) {
            (Some(group), None, None, None) => Ok(Actuator::Rate { group }),
            (Some(group), Some(port), None, None) => Ok(Actuator::Weight { group, port }),
            (None, None, Some(rule), Some(condition)) if condition > 0 => {
                Ok(Actuator::Share { rule, condition })
            }
            (None, None, Some(_), _) => bail!(
                "{who}: rule needs condition (1-based, as tcpchains -L lists them)"
            ),
            (None, Some(_), _, _) => bail!("{who}: member needs group"),
            (None, None, None, _) => bail!(
                "{who}: no actuator: set group (a rate group, or with member a ratio group) or rule and condition"
            ),
            _ => bail!(
                "{who}: one actuator only: group (with or without member), or rule and condition"
            ),
        }
    }
}

/// The sign a delay loop's model must have for its actuator: +1 if raising the value
/// raises the loop's delay, -1 if it lowers it. `own` says whether the actuator works on
/// the loop's own port: a rate group it is a member of, its weight in a ratio group, a
/// probabilistic condition that sends connections to it. More rate or weight for the
/// port itself serves its queue faster (lower delay); for other ports, it takes the
/// server from it (higher delay). A condition's weight works the other way: more
/// weight toward the port brings it more arrivals (higher delay); toward another port,
/// fewer.
pub fn expected_sign(act: Actuator, own: bool) -> f64 {
    let more_for_own_port_lowers = !matches!(act, Actuator::Share { .. });
    if own == more_for_own_port_lowers {
        -1.0
    } else {
        1.0
    }
}

/// The sign a ratio loop's model must have: its actuator works on the numerator's port
/// (`on_port`) or on the denominator's (`on_relative`), exactly one of them: raising it
/// moves the ratio as it moves the numerator's delay ([`expected_sign`]), or the other
/// way. `None` if it works on both or neither (its effect on the ratio is unknown).
pub fn ratio_sign(act: Actuator, on_port: bool, on_relative: bool) -> Option<f64> {
    match (on_port, on_relative) {
        (true, false) => Some(expected_sign(act, true)),
        (false, true) => Some(-expected_sign(act, true)),
        _ => None,
    }
}

/// The sign a utilization loop's model must have: raising the split range's output
/// sends more clients to degraded content, then admits fewer, so it lowers the
/// utilization (the stages are configured in that sense).
pub const UTILIZATION_SIGN: f64 = -1.0;

/// Why an identified model is not written: b of the wrong sign for the actuator, or a
/// fit that explains too little; `quantity` names the measurement ("delay"). `None` if
/// the model may be used.
pub fn implausible(b: f64, sign: f64, r2: f64, quantity: &str) -> Option<String> {
    if b * sign <= 0.0 {
        return Some(format!(
            "b is {b:.5}, but raising this actuator must {} the {quantity}: the {quantity} did not follow the actuator",
            if sign > 0.0 { "raise" } else { "lower" }
        ));
    }
    if r2 < MIN_R2 {
        return Some(format!(
            "R^2 is {r2:.3} (below {MIN_R2}): the model explains almost none of the {quantity}"
        ));
    }
    None
}

/// The smallest R^2 of a model `qosmgr identify --write` writes without `--force`.
pub const MIN_R2: f64 = 0.3;

impl core::fmt::Display for Actuator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Actuator::Rate { group } => write!(f, "rate of group {group}"),
            Actuator::Weight { group, port } => write!(f, "weight of port {port} in group {group}"),
            Actuator::Share { rule, condition } => {
                write!(f, "weight of condition {condition} of rule {rule}")
            }
        }
    }
}

impl LoopConfig {
    /// Its name.
    pub fn name(&self) -> &str {
        match self {
            LoopConfig::Delay(l) => &l.name,
            LoopConfig::Utilization(l) => &l.name,
            LoopConfig::Ratio(l) => &l.name,
        }
    }

    /// Its type.
    pub fn kind(&self) -> LoopType {
        match self {
            LoopConfig::Delay(_) => LoopType::Delay,
            LoopConfig::Utilization(_) => LoopType::Utilization,
            LoopConfig::Ratio(_) => LoopType::Ratio,
        }
    }

    /// The set point, in the unit of its type ([`LoopType::unit`]).
    pub fn set_point(&self) -> f64 {
        match self {
            LoopConfig::Delay(l) => l.set_point_ms(),
            LoopConfig::Utilization(l) => l.set_point,
            LoopConfig::Ratio(l) => l.set_point,
        }
    }

    /// The identified model, if any.
    pub fn model(&self) -> Option<ModelConfig> {
        match self {
            LoopConfig::Delay(l) => l.model,
            LoopConfig::Utilization(l) => l.model,
            LoopConfig::Ratio(l) => l.model,
        }
    }

    /// Every actuator it drives, in order (a delay loop has one; a utilization loop
    /// one per stage).
    pub fn actuators(&self) -> Result<Vec<Actuator>> {
        match self {
            LoopConfig::Delay(l) => Ok(vec![l.actuator()?]),
            LoopConfig::Utilization(l) => l.actuators(),
            LoopConfig::Ratio(l) => Ok(vec![l.actuator()?]),
        }
    }

    /// The controller settings, if the gains are set. A delay loop's output is its
    /// actuator's value, within `min..=max`; a utilization loop's is the split range's
    /// output, within 0 to 1.
    pub fn pi(&self) -> Result<openqos_control::pi::PiConfig> {
        let (kp, ki, min, max, slew, deadband) = match self {
            LoopConfig::Delay(l) => (
                l.kp,
                l.ki,
                l.min as f64,
                l.max as f64,
                l.slew,
                l.deadband_ms(),
            ),
            LoopConfig::Utilization(l) => (l.kp, l.ki, 0.0, 1.0, l.slew, l.deadband.unwrap_or(0.0)),
            LoopConfig::Ratio(l) => (
                l.kp,
                l.ki,
                l.min as f64,
                l.max as f64,
                l.slew,
                l.deadband.unwrap_or(0.0),
            ),
        };
        let (Some(kp), Some(ki)) = (kp, ki) else {
            bail!(
                "loop {:?} has no gains (kp, ki): run `qosmgr identify` and `qosmgr design` first",
                self.name()
            );
        };
        let cfg = openqos_control::pi::PiConfig {
            kp,
            ki,
            min,
            max,
            slew: slew.unwrap_or(f64::INFINITY),
            deadband,
        };
        cfg.validate()
            .with_context(|| format!("loop {:?}", self.name()))?;
        Ok(cfg)
    }

    /// The checks of one loop that need no kernel.
    fn check(&self) -> Result<()> {
        match self {
            LoopConfig::Delay(l) => l.check()?,
            LoopConfig::Utilization(l) => l.check()?,
            LoopConfig::Ratio(l) => l.check()?,
        }
        let (kp, ki) = match self {
            LoopConfig::Delay(l) => (l.kp, l.ki),
            LoopConfig::Utilization(l) => (l.kp, l.ki),
            LoopConfig::Ratio(l) => (l.kp, l.ki),
        };
        if kp.is_some() || ki.is_some() {
            self.pi()?;
        }
        Ok(())
    }
}

impl DelayLoop {
    /// What the loop drives (the configuration was checked: one of them is set).
    pub fn actuator(&self) -> Result<Actuator> {
        Actuator::from_keys(
            &format!("loop {:?}", self.name),
            self.group,
            self.member,
            self.rule,
            self.condition,
        )
    }

    /// The set point in milliseconds.
    pub fn set_point_ms(&self) -> f64 {
        self.set_point.as_secs_f64() * 1000.0
    }

    /// The deadband in milliseconds.
    pub fn deadband_ms(&self) -> f64 {
        self.deadband.map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }

    fn check(&self) -> Result<()> {
        if self.port == 0 {
            bail!("loop {:?}: port 0", self.name);
        }
        if self.set_point.is_zero() {
            bail!("loop {:?}: the set point must be above 0", self.name);
        }
        OneActuator {
            name: &self.name,
            act: self.actuator()?,
            range: (self.min, self.max, self.safe),
            slew: self.slew,
            samples: (self.min_samples, self.rate_periods),
        }
        .check()
    }
}

/// The settings a loop with one actuator (a delay or a ratio loop) checks alike.
struct OneActuator<'a> {
    name: &'a str,
    act: Actuator,
    /// `min`, `max`, `safe`.
    range: (u64, u64, u64),
    slew: Option<f64>,
    /// `min_samples`, `rate_periods`.
    samples: (u64, usize),
}

impl OneActuator<'_> {
    fn check(&self) -> Result<()> {
        let ctx = || format!("loop {:?}", self.name);
        let (act, (min, max, safe)) = (self.act, self.range);
        let top = act.top();
        if max > top {
            bail!("{}: max is above {top}, the most the {act} can be", ctx());
        }
        if min == 0 || min > max {
            bail!("{}: min must be at least 1 and at most max", ctx());
        }
        if safe < min || safe > max {
            bail!("{}: safe must be within min..=max", ctx());
        }
        if self.slew.is_some_and(|s| !(s > 0.0 && s.is_finite())) {
            bail!("{}: slew must be a positive number", ctx());
        }
        if self.samples.0 == 0 {
            bail!("{}: min_samples must be at least 1", ctx());
        }
        if !(1..=100).contains(&self.samples.1) {
            bail!("{}: rate_periods must be from 1 to 100", ctx());
        }
        Ok(())
    }
}

impl RatioLoop {
    /// What the loop drives.
    pub fn actuator(&self) -> Result<Actuator> {
        Actuator::from_keys(
            &format!("loop {:?}", self.name),
            self.group,
            self.member,
            self.rule,
            self.condition,
        )
    }

    fn check(&self) -> Result<()> {
        let ctx = || format!("loop {:?}", self.name);
        if self.port == 0 || self.relative_to == 0 {
            bail!("{}: port 0", ctx());
        }
        if self.port == self.relative_to {
            bail!(
                "{}: port and relative_to are both {}: a ratio of two ports' delays",
                ctx(),
                self.port
            );
        }
        if !(self.set_point > 0.0 && self.set_point.is_finite()) {
            bail!(
                "{}: the set point (a ratio of delays) must be above 0, not {}",
                ctx(),
                self.set_point
            );
        }
        if self.deadband.is_some_and(|d| !(d >= 0.0 && d.is_finite())) {
            bail!("{}: deadband must be 0 or more (of the ratio)", ctx());
        }
        OneActuator {
            name: &self.name,
            act: self.actuator()?,
            range: (self.min, self.max, self.safe),
            slew: self.slew,
            samples: (self.min_samples, self.rate_periods),
        }
        .check()
    }
}

/// The most CPUs a utilization loop's `cpus` may name.
const MAX_CPUS: f64 = 65_536.0;

impl UtilizationLoop {
    /// The stages' actuators, in order.
    pub fn actuators(&self) -> Result<Vec<Actuator>> {
        self.stages
            .iter()
            .enumerate()
            .map(|(i, s)| s.actuator(&self.name, i))
            .collect()
    }

    fn check(&self) -> Result<()> {
        let ctx = || format!("loop {:?}", self.name);
        if !(self.set_point > 0.0 && self.set_point <= 100.0) {
            bail!(
                "{}: the set point must be above 0 and at most 100 (percent), not {}",
                ctx(),
                self.set_point
            );
        }
        if self
            .cpus
            .is_some_and(|c| !(c > 0.0 && c <= MAX_CPUS && c.is_finite()))
        {
            bail!("{}: cpus must be a positive number of CPUs", ctx());
        }
        if self.cgroups.is_empty() {
            bail!(
                "{}: no cgroups: name the cgroup v2 directories whose CPU time is held",
                ctx()
            );
        }
        for (i, g) in self.cgroups.iter().enumerate() {
            if !g.is_absolute() {
                bail!(
                    "{}: cgroup {} is not an absolute path (a directory under /sys/fs/cgroup)",
                    ctx(),
                    g.display()
                );
            }
            if let Some(o) = self.cgroups[..i]
                .iter()
                .find(|o| o.starts_with(g) || g.starts_with(o))
            {
                bail!(
                    "{}: cgroups {} and {} overlap: cgroup v2 counts a cgroup's children in its usage, so it would count twice",
                    ctx(),
                    o.display(),
                    g.display()
                );
            }
        }
        if self.stages.is_empty() {
            bail!(
                "{}: no stages: a utilization loop needs at least one actuator in stages",
                ctx()
            );
        }
        let acts = self.actuators()?;
        for (i, s) in self.stages.iter().enumerate() {
            let who = format!("loop {:?} stage {}", self.name, i + 1);
            let act = acts[i];
            if let Some(j) = acts[..i].iter().position(|a| *a == act) {
                bail!("{who}: the {act} is stage {} already", j + 1);
            }
            if s.from == s.to {
                bail!(
                    "{who}: from and to are both {}: the stage would move nothing",
                    s.from
                );
            }
            let (lo, hi) = (s.from.min(s.to), s.from.max(s.to));
            let top = act.top();
            if hi > top {
                bail!("{who}: {hi} is above {top}, the most the {act} can be");
            }
            if lo == 0 {
                // The kernel takes no rate, ratio weight or probabilistic weight of 0
                // (a probabilistic weight of 1 sends 0.01 % of the connections).
                bail!("{who}: the {act} must stay at least 1 (from and to)");
            }
            if s.safe < lo || s.safe > hi {
                bail!("{who}: safe must be within from and to ({lo}..={hi})");
            }
        }
        if self.slew.is_some_and(|s| !(s > 0.0 && s.is_finite())) {
            bail!(
                "{}: slew must be a positive number (of the output, 0 to 1, a period)",
                ctx()
            );
        }
        if self.deadband.is_some_and(|d| !(d >= 0.0 && d.is_finite())) {
            bail!("{}: deadband must be 0 or more (percentage points)", ctx());
        }
        Ok(())
    }
}

impl StageConfig {
    /// What stage `i` (0-based) of loop `name` drives.
    pub fn actuator(&self, name: &str, i: usize) -> Result<Actuator> {
        Actuator::from_keys(
            &format!("loop {name:?} stage {}", i + 1),
            self.group,
            self.member,
            self.rule,
            self.condition,
        )
    }
}

impl Config {
    /// Parses and checks `text`; nothing is applied anywhere.
    pub fn parse(text: &str) -> Result<Self> {
        let c: Config = toml::from_str(text).context("malformed configuration")?;
        c.check()?;
        Ok(c)
    }

    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// The checks that need no kernel.
    pub fn check(&self) -> Result<()> {
        if self.period < Duration::from_millis(100) || self.period > Duration::from_secs(600) {
            bail!("period must be from 100ms to 10m");
        }
        if !(2..=100).contains(&self.lease_periods) {
            bail!("lease_periods must be from 2 to 100");
        }
        let lease = self.lease_ms();
        if !(100..=3_600_000).contains(&lease) {
            bail!("a lease of {lease} ms (period x lease_periods) is outside 100 ms to 1 h");
        }
        if self.loops.is_empty() {
            bail!("no loop configured ([[loop]])");
        }
        for (i, l) in self.loops.iter().enumerate() {
            if self.loops[..i].iter().any(|o| o.name() == l.name()) {
                bail!("two loops are named {:?}", l.name());
            }
            for act in l.actuators()? {
                if self.loops[..i].iter().any(|o| {
                    o.actuators()
                        .is_ok_and(|acts| acts.iter().any(|a| a.owner() == act.owner()))
                }) {
                    let (rule, id) = act.owner();
                    bail!(
                        "loops {:?} and another drive the same {} {id}",
                        l.name(),
                        if rule { "rule" } else { "group" }
                    );
                }
            }
            l.check()?;
        }
        Ok(())
    }

    /// The lease of every limit set, milliseconds.
    pub fn lease_ms(&self) -> u64 {
        self.period.as_millis() as u64 * u64::from(self.lease_periods)
    }

    /// The loop named `name`.
    pub fn find(&self, name: &str) -> Result<&LoopConfig> {
        self.loops
            .iter()
            .find(|l| l.name() == name)
            .with_context(|| format!("no loop named {name:?}"))
    }
}

/// Writes `values` (key, number) into the table of loop `name` in the file at `path`
/// (into `[loop.model]` when `model`), keeping everything else of the file as it is.
pub fn write_values(path: &Path, name: &str, model: bool, values: &[(&str, f64)]) -> Result<()> {
    let items: Vec<(&str, toml_edit::Value)> = values
        .iter()
        .map(|(k, v)| {
            // Rounded to 6 significant digits: what the fit or design can stand behind.
            let v: f64 = format!("{v:.6e}").parse().unwrap_or(*v);
            (*k, toml_edit::Value::from(v))
        })
        .collect();
    write_items(path, name, model, &items)
}

/// [`write_values`] for values of any TOML type.
pub fn write_items(
    path: &Path,
    name: &str,
    model: bool,
    values: &[(&str, toml_edit::Value)],
) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut doc: toml_edit::DocumentMut = text.parse().context("malformed configuration")?;
    let loops = doc
        .get_mut("loop")
        .and_then(|l| l.as_array_of_tables_mut())
        .context("no [[loop]] in the configuration")?;
    let t = loops
        .iter_mut()
        .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))
        .with_context(|| format!("no loop named {name:?}"))?;
    let t = if model {
        if !t.contains_key("model") {
            t.insert("model", toml_edit::Item::Table(toml_edit::Table::new()));
        }
        t.get_mut("model")
            .and_then(|m| m.as_table_mut())
            .context("model is not a table")?
    } else {
        t
    };
    for (k, v) in values {
        t.insert(k, toml_edit::value(v.clone()));
    }
    let new = doc.to_string();
    // Checked before it replaces the file.
    Config::parse(&new)?;
    let tmp = path.with_extension("toml.new");
    std::fs::write(&tmp, new).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// A utilization loop (the paper's Figure 10) for the tests.
#[cfg(test)]
pub const TEST_UTILIZATION: &str = r#"
period = "2s"

[[loop]]
name = "web-cpu"
type = "utilization"
cgroups = ["/sys/fs/cgroup/web-full", "/sys/fs/cgroup/web-degraded"]
set_point = 30.0
stages = [
  { rule = 80, condition = 1, from = 1, to = 10000, safe = 1 },
  { group = 3, from = 200, to = 5, safe = 200 },
]
slew = 0.2
deadband = 1.5
kp = -0.01
ki = -0.02
"#;

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
period = "500ms"
lease_periods = 4

[[loop]]
name = "premium"
type = "delay"
port = 8080
set_point = "200ms"
group = 2
min = 2
max = 200
safe = 200
slew = 40
deadband = "5ms"
kp = 0.05
ki = 0.02
"#;

    /// The first loop of `c`, a delay loop.
    fn delay(c: &Config) -> &DelayLoop {
        match &c.loops[0] {
            LoopConfig::Delay(l) => l,
            other => panic!("not a delay loop: {other:?}"),
        }
    }

    #[test]
    fn parses_a_loop() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.period, Duration::from_millis(500));
        assert_eq!(c.lease_ms(), 2000);
        let l = delay(&c);
        assert_eq!(c.loops[0].kind(), LoopType::Delay);
        assert_eq!(c.loops[0].set_point(), 200.0);
        assert_eq!(
            (l.port, l.group, l.min_samples, l.rate_periods),
            (8080, Some(2), 5, 1)
        );
        assert_eq!(l.actuator().unwrap(), Actuator::Rate { group: 2 });
        assert_eq!(l.measure, Measure::Mean);
        let q =
            Config::parse(&GOOD.replace("group = 2", "group = 2\nmeasure = \"queue\"")).unwrap();
        assert_eq!(delay(&q).measure, Measure::Queue);
        let o =
            Config::parse(&GOOD.replace("group = 2", "group = 2\nmeasure = \"oldest\"")).unwrap();
        assert_eq!(delay(&o).measure, Measure::Oldest);
        assert!(Config::parse(&GOOD.replace("group = 2", "group = 2\nmeasure = \"p99\"")).is_err());
        assert_eq!(l.set_point_ms(), 200.0);
        assert_eq!(l.deadband_ms(), 5.0);
        let pi = c.loops[0].pi().unwrap();
        assert_eq!(
            (pi.kp, pi.ki, pi.min, pi.max, pi.slew),
            (0.05, 0.02, 2.0, 200.0, 40.0)
        );
        assert_eq!(c.status_file, STATUS_FILE);
    }

    #[test]
    fn refuses_bad_configurations_with_a_reason() {
        let bad = |from: &str, to: &str, want: &str| {
            let text = GOOD.replace(from, to);
            assert_ne!(text, GOOD, "{from}");
            let e = format!("{:#}", Config::parse(&text).unwrap_err());
            assert!(e.contains(want), "{from} -> {to}: {e}");
        };
        bad(
            "set_point = \"200ms\"",
            "set_point = \"0s\"",
            "set point must be above 0",
        );
        bad(
            "min = 2",
            "min = 300",
            "min must be at least 1 and at most max",
        );
        bad("type = \"delay\"", "type = \"cpu\"", "unknown variant");
        bad("port = 8080", "port = 8080\nport = 1", "malformed");
        bad("safe = 200", "safe = 500", "safe must be within");
        bad(
            "slew = 40",
            "slew = 40\nrate_periods = 0",
            "rate_periods must be",
        );
        bad(
            "slew = 40",
            "slew = 40\nrate_periods = 101",
            "rate_periods must be",
        );
        bad("kp = 0.05", "kp = nan", "finite");
        bad("slew = 40", "slew = -1", "slew must be a positive");
        bad("group = 2", "group = 2\ncolour = 1", "unknown field");
        bad("lease_periods = 4", "lease_periods = 1", "lease_periods");
        assert!(Config::parse("[[loop]]\nname = 1").is_err());
        assert!(format!("{:#}", Config::parse("period = \"1s\"").unwrap_err()).contains("no loop"));
        let two = format!("{GOOD}\n{}", &GOOD[GOOD.find("[[loop]]").unwrap()..]);
        assert!(format!("{:#}", Config::parse(&two).unwrap_err()).contains("two loops"));
    }

    #[test]
    fn actuators() {
        let act = |from: &str, to: &str| {
            Config::parse(&GOOD.replace(from, to)).map(|c| c.loops[0].actuators().unwrap()[0])
        };
        assert_eq!(
            act("group = 2", "group = 6\nmember = 8081").unwrap(),
            Actuator::Weight {
                group: 6,
                port: 8081
            }
        );
        assert_eq!(
            act(
                "group = 2\nmin = 2\nmax = 200",
                "rule = 80\ncondition = 2\nmin = 2\nmax = 200"
            )
            .unwrap(),
            Actuator::Share {
                rule: 80,
                condition: 2
            }
        );
        let err = |from: &str, to: &str, want: &str| {
            let e = format!("{:#}", act(from, to).unwrap_err());
            assert!(e.contains(want), "{to}: {e}");
        };
        err("group = 2\n", "", "no actuator");
        err("group = 2", "member = 8081", "member needs group");
        err("group = 2", "rule = 80", "rule needs condition");
        err(
            "group = 2",
            "rule = 80\ncondition = 0",
            "rule needs condition",
        );
        err(
            "group = 2",
            "group = 2\nrule = 80\ncondition = 1",
            "one actuator only",
        );
        err(
            "group = 2\nmin = 2\nmax = 200\nsafe = 200",
            "rule = 80\ncondition = 1\nmin = 2\nmax = 20000\nsafe = 200",
            "max is above 10000",
        );
        let two = format!(
            "{GOOD}\n{}",
            &GOOD[GOOD.find("[[loop]]").unwrap()..]
                .replace("premium", "other")
                .replace("group = 2", "group = 2\nmember = 9")
        );
        assert!(format!("{:#}", Config::parse(&two).unwrap_err()).contains("the same group 2"));
    }

    #[test]
    fn gains_needed_only_to_run() {
        let c = Config::parse(&GOOD.replace("kp = 0.05\nki = 0.02\n", "")).unwrap();
        assert!(format!("{:#}", c.loops[0].pi().unwrap_err()).contains("qosmgr design"));
    }

    #[test]
    fn writes_values_in_place() {
        let dir = std::env::temp_dir().join(format!("qosmgr-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("q.toml");
        std::fs::write(&p, format!("# kept\n{GOOD}")).unwrap();
        write_values(
            &p,
            "premium",
            true,
            &[("a", 0.5), ("b", 2.0), ("c", 1.0), ("r2", 0.93)],
        )
        .unwrap();
        write_values(&p, "premium", false, &[("kp", 0.125), ("ki", 0.0625)]).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("# kept\n"), "{text}");
        let c = Config::parse(&text).unwrap();
        let l = delay(&c);
        assert_eq!((l.kp, l.ki), (Some(0.125), Some(0.0625)));
        assert_eq!(c.loops[0].model().unwrap().b, 2.0);
        assert!(write_values(&p, "nobody", false, &[("kp", 1.0)]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn model_signs() {
        let rate = Actuator::Rate { group: 2 };
        let weight = Actuator::Weight { group: 2, port: 80 };
        let share = Actuator::Share {
            rule: 80,
            condition: 1,
        };
        // The Figure 5 configuration: basic's rate up, premium's delay up.
        assert_eq!(expected_sign(rate, false), 1.0);
        assert_eq!(expected_sign(rate, true), -1.0);
        assert_eq!(expected_sign(weight, true), -1.0);
        assert_eq!(expected_sign(weight, false), 1.0);
        // More weight toward the loop's port: more arrivals there.
        assert_eq!(expected_sign(share, true), 1.0);
        assert_eq!(expected_sign(share, false), -1.0);
    }

    #[test]
    fn implausible_models_are_refused() {
        assert!(implausible(52.0, 1.0, 0.85, "delay").is_none());
        assert!(implausible(-3.0, -1.0, 0.6, "delay").is_none());
        // fig8's first run: b < 0 for a rate group on the basic port.
        let why = implausible(-95.7, 1.0, 0.282, "delay").unwrap();
        assert!(why.contains("must raise"), "{why}");
        assert!(implausible(0.0, 1.0, 0.9, "delay").is_some());
        let why = implausible(10.0, 1.0, 0.1, "delay").unwrap();
        assert!(why.contains("R^2 is 0.100"), "{why}");
    }

    /// The first loop of `c`, a utilization loop.
    fn utilization(c: &Config) -> &UtilizationLoop {
        match &c.loops[0] {
            LoopConfig::Utilization(l) => l,
            other => panic!("not a utilization loop: {other:?}"),
        }
    }

    #[test]
    fn parses_a_utilization_loop() {
        let c = Config::parse(TEST_UTILIZATION).unwrap();
        let l = &c.loops[0];
        assert_eq!(l.kind(), LoopType::Utilization);
        assert_eq!((l.kind().name(), l.kind().unit()), ("utilization", "%"));
        assert_eq!(l.name(), "web-cpu");
        assert_eq!(l.set_point(), 30.0);
        assert_eq!(
            l.actuators().unwrap(),
            vec![
                Actuator::Share {
                    rule: 80,
                    condition: 1
                },
                Actuator::Rate { group: 3 }
            ]
        );
        let u = utilization(&c);
        assert_eq!(u.cgroups.len(), 2);
        assert_eq!(u.cpus, None);
        assert_eq!(
            (u.stages[1].from, u.stages[1].to, u.stages[1].safe),
            (200, 5, 200)
        );
        // The controller's output is the split range's, 0 to 1; slew and deadband in
        // its units and in percentage points.
        let pi = l.pi().unwrap();
        assert_eq!(
            (pi.kp, pi.ki, pi.min, pi.max, pi.slew, pi.deadband),
            (-0.01, -0.02, 0.0, 1.0, 0.2, 1.5)
        );
        // An integer set point, fractional CPUs, a ratio group member as a stage.
        let c = Config::parse(
            &TEST_UTILIZATION
                .replace("set_point = 30.0", "set_point = 30\ncpus = 1.5")
                .replace("{ group = 3,", "{ group = 3, member = 8081,"),
        )
        .unwrap();
        assert_eq!(utilization(&c).cpus, Some(1.5));
        assert_eq!(
            c.loops[0].actuators().unwrap()[1],
            Actuator::Weight {
                group: 3,
                port: 8081
            }
        );
        // Beside a delay loop on other actuators.
        let both = format!(
            "{TEST_UTILIZATION}\n{}",
            &GOOD[GOOD.find("[[loop]]").unwrap()..]
        );
        let c = Config::parse(&both).unwrap();
        assert_eq!(c.find("premium").unwrap().kind(), LoopType::Delay);
        assert_eq!(c.find("web-cpu").unwrap().kind(), LoopType::Utilization);
    }

    #[test]
    fn refuses_bad_utilization_loops_with_a_reason() {
        let bad = |from: &str, to: &str, want: &str| {
            let text = TEST_UTILIZATION.replace(from, to);
            assert_ne!(text, TEST_UTILIZATION, "{from}");
            let e = format!("{:#}", Config::parse(&text).unwrap_err());
            assert!(e.contains(want), "{from} -> {to}: {e}");
        };
        let stages_at = TEST_UTILIZATION.find("stages = [").unwrap();
        let stages_end = stages_at + TEST_UTILIZATION[stages_at..].find("]\n").unwrap() + 2;
        let stages = &TEST_UTILIZATION[stages_at..stages_end];
        bad(stages, "stages = []\n", "no stages");
        bad(stages, "", "missing field `stages`");
        bad("to = 10000", "to = 1", "from and to are both 1");
        bad(
            "from = 1, to = 10000",
            "from = 0, to = 10000",
            "must stay at least 1",
        );
        bad("to = 10000", "to = 10001", "10001 is above 10000");
        bad(
            "from = 200, to = 5",
            "from = 200, to = 0",
            "must stay at least 1",
        );
        bad(
            "to = 5, safe = 200",
            "to = 5, safe = 201",
            "safe must be within",
        );
        bad(
            "to = 5, safe = 200",
            "to = 5, safe = 4",
            "stage 2: safe must be within",
        );
        bad(
            "{ group = 3,",
            "{ rule = 80, condition = 1,",
            "stage 2: the weight of condition 1 of rule 80 is stage 1 already",
        );
        bad(
            "{ group = 3,",
            "{ group = 3, rule = 9,",
            "one actuator only",
        );
        bad("{ group = 3,", "{", "stage 2: no actuator");
        bad("condition = 1,", "", "stage 1: rule needs condition");
        bad(
            "{ group = 3,",
            "{ group = 3, colour = 1,",
            "unknown field `colour`",
        );
        bad(
            "set_point = 30.0",
            "set_point = 0.0",
            "set point must be above 0",
        );
        bad("set_point = 30.0", "set_point = 100.5", "at most 100");
        bad("set_point = 30.0", "set_point = nan", "at most 100");
        bad("set_point = 30.0", "set_point = \"30%\"", "malformed");
        bad(
            "set_point = 30.0",
            "set_point = 30.0\ncpus = 0",
            "cpus must be",
        );
        bad(
            "cgroups = [\"/sys/fs/cgroup/web-full\", \"/sys/fs/cgroup/web-degraded\"]",
            "cgroups = []",
            "no cgroups",
        );
        bad(
            "\"/sys/fs/cgroup/web-degraded\"",
            "\"web-degraded\"",
            "not an absolute path",
        );
        bad(
            "\"/sys/fs/cgroup/web-degraded\"",
            "\"/sys/fs/cgroup/web-full\"",
            "overlap",
        );
        bad(
            "\"/sys/fs/cgroup/web-degraded\"",
            "\"/sys/fs/cgroup/web-full/worker\"",
            "would count twice",
        );
        bad("slew = 0.2", "slew = 0", "slew must be a positive");
        bad("deadband = 1.5", "deadband = -1", "deadband must be");
        bad("ki = -0.02", "ki = inf", "finite");
        // Keys of the other type are unknown here.
        bad(
            "set_point = 30.0",
            "set_point = 30.0\nport = 8080",
            "unknown field `port`",
        );
        bad(
            "set_point = 30.0",
            "set_point = 30.0\nmin = 1",
            "unknown field `min`",
        );
        bad(
            "type = \"utilization\"",
            "type = \"cpu\"",
            "unknown variant",
        );
        // A delay loop on an actuator a utilization loop drives.
        let both = format!(
            "{TEST_UTILIZATION}\n{}",
            &GOOD[GOOD.find("[[loop]]").unwrap()..].replace("group = 2", "group = 3")
        );
        let e = format!("{:#}", Config::parse(&both).unwrap_err());
        assert!(e.contains("the same group 3"), "{e}");
        let both = format!(
            "{TEST_UTILIZATION}\n{}",
            &GOOD[GOOD.find("[[loop]]").unwrap()..]
                .replace("group = 2", "rule = 80\ncondition = 2")
        );
        let e = format!("{:#}", Config::parse(&both).unwrap_err());
        assert!(e.contains("the same rule 80"), "{e}");
    }

    #[test]
    fn writes_a_utilization_loops_model_and_gains() {
        let dir = std::env::temp_dir().join(format!("qosmgr-test-cpu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("q.toml");
        std::fs::write(&p, TEST_UTILIZATION.replace("kp = -0.01\nki = -0.02\n", "")).unwrap();
        let c = Config::load(&p).unwrap();
        assert!(format!("{:#}", c.loops[0].pi().unwrap_err()).contains("qosmgr design"));
        write_values(&p, "web-cpu", true, &[("a", 0.3), ("b", -40.0)]).unwrap();
        write_values(&p, "web-cpu", false, &[("kp", -0.004), ("ki", -0.012)]).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.contains("{ group = 3, from = 200, to = 5, safe = 200 }"),
            "{text}"
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.loops[0].model().unwrap().b, -40.0);
        let u = utilization(&c);
        assert_eq!((u.kp, u.ki), (Some(-0.004), Some(-0.012)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_documented_example_parses() {
        // The TOML of this module's documentation, both loops.
        let doc: String = include_str!("config.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//!"))
            .map_while(|l| l.strip_prefix("//!"))
            .map(|l| l.strip_prefix(' ').unwrap_or(l))
            .skip_while(|l| *l != "```toml")
            .skip(1)
            .take_while(|l| *l != "```")
            .map(|l| format!("{l}\n"))
            .collect();
        let c = Config::parse(&doc).unwrap_or_else(|e| panic!("{e:#}\n{doc}"));
        assert_eq!(c.loops.len(), 3);
        let gold = c.find("gold-vs-basic").unwrap();
        assert_eq!((gold.kind(), gold.set_point()), (LoopType::Ratio, 0.5));
        assert_eq!(
            gold.actuators().unwrap(),
            vec![Actuator::Weight {
                group: 4,
                port: 8080
            }]
        );
        let cpu = c.find("web-cpu").unwrap();
        assert_eq!(cpu.pi().unwrap().ki, -0.012);
        assert!(matches!(cpu, LoopConfig::Utilization(u) if u.cpus == Some(1.0)));
    }

    #[test]
    fn the_installed_example_parses_with_and_without_its_second_loop() {
        let text = include_str!("../../../etc/qosmgr.toml.example");
        let c = Config::parse(text).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(c.loops.len(), 1);
        // Its commented-out utilization loop (from its "# [[loop]]" on), uncommented.
        let at = text.find("# [[loop]]").expect("the second loop");
        let both: String = text[..at].to_string()
            + &text[at..]
                .lines()
                .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
                .collect::<String>();
        let c = Config::parse(&both).unwrap_or_else(|e| panic!("{e:#}\n{both}"));
        assert_eq!(c.loops.len(), 2);
        assert!(matches!(c.find("web-cpu"), Ok(LoopConfig::Utilization(_))));
    }

    const TEST_RATIO: &str = r#"
[[loop]]
name = "gold"
type = "ratio"
port = 8080
relative_to = 8081
set_point = 0.5
group = 4
member = 8080
min = 1
max = 20
safe = 1
"#;

    #[test]
    fn refuses_bad_ratio_loops_with_a_reason() {
        let c = Config::parse(TEST_RATIO).unwrap();
        assert_eq!(c.loops[0].kind(), LoopType::Ratio);
        assert!(c.loops[0].pi().is_err(), "no gains yet");
        let bad = |from: &str, to: &str, want: &str| {
            let text = TEST_RATIO.replace(from, to);
            assert_ne!(text, TEST_RATIO, "{from}");
            let e = format!("{:#}", Config::parse(&text).unwrap_err());
            assert!(e.contains(want), "{from} -> {to}: {e}");
        };
        bad("relative_to = 8081", "relative_to = 8080", "both 8080");
        bad("relative_to = 8081\n", "", "missing field `relative_to`");
        bad("set_point = 0.5", "set_point = 0.0", "must be above 0");
        bad("set_point = 0.5", "set_point = -1.0", "must be above 0");
        bad("set_point = 0.5", "set_point = \"500ms\"", "malformed");
        bad(
            "min = 1",
            "min = 30",
            "min must be at least 1 and at most max",
        );
        bad("safe = 1", "safe = 21", "safe must be within");
        bad(
            "member = 8080\n",
            "member = 8080\nrule = 80\n",
            "one actuator only",
        );
        bad("max = 20", "max = 20\ndeadband = -0.1", "deadband");
        bad("max = 20", "max = 20\nwindow = 3", "unknown field `window`");
    }

    #[test]
    fn a_ratio_moves_with_its_numerator_or_against_its_denominator() {
        let w = Actuator::Weight {
            group: 4,
            port: 8080,
        };
        // More weight for the numerator's port: its delay, and the ratio, fall.
        assert_eq!(ratio_sign(w, true, false), Some(-1.0));
        // For the denominator's: its delay falls, the ratio rises.
        assert_eq!(ratio_sign(w, false, true), Some(1.0));
        // A condition sending more clients to the numerator's port raises the ratio.
        let share = Actuator::Share {
            rule: 80,
            condition: 1,
        };
        assert_eq!(ratio_sign(share, true, false), Some(1.0));
        assert_eq!(ratio_sign(w, true, true), None);
        assert_eq!(ratio_sign(w, false, false), None);
    }

    #[test]
    fn a_utilization_model_must_have_a_negative_gain() {
        assert!(implausible(-40.0, UTILIZATION_SIGN, 0.8, "utilization").is_none());
        let why = implausible(40.0, UTILIZATION_SIGN, 0.8, "utilization").unwrap();
        assert!(why.contains("must lower the utilization"), "{why}");
    }
}
