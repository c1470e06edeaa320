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
//! ```

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::{path::Path, time::Duration};

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
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LoopType {
    /// The mean connection delay (end of handshake to `accept()`) of one port, by the
    /// accept rate of a group of other ports.
    Delay,
}

/// A first-order model of the plant, from `qosmgr identify`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Pole.
    pub a: f64,
    /// Gain (milliseconds of delay per connection per second).
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

/// One loop.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoopConfig {
    /// Unique name.
    pub name: String,
    /// What it holds.
    #[serde(rename = "type")]
    pub kind: LoopType,
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

/// Why an identified model is not written: b of the wrong sign for the actuator, or a
/// fit that explains too little. `None` if the model may be used.
pub fn implausible(b: f64, sign: f64, r2: f64) -> Option<String> {
    if b * sign <= 0.0 {
        return Some(format!(
            "b is {b:.5}, but raising this actuator must {} the delay: the delay did not follow the actuator",
            if sign > 0.0 { "raise" } else { "lower" }
        ));
    }
    if r2 < MIN_R2 {
        return Some(format!(
            "R^2 is {r2:.3} (below {MIN_R2}): the model explains almost none of the delay"
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
    /// What the loop drives (the configuration was checked: one of them is set).
    pub fn actuator(&self) -> Result<Actuator> {
        match (self.group, self.member, self.rule, self.condition) {
            (Some(group), None, None, None) => Ok(Actuator::Rate { group }),
            (Some(group), Some(port), None, None) => Ok(Actuator::Weight { group, port }),
            (None, None, Some(rule), Some(condition)) if condition > 0 => {
                Ok(Actuator::Share { rule, condition })
            }
            (None, None, Some(_), _) => bail!(
                "loop {:?}: rule needs condition (1-based, as tcpchains -L lists them)",
                self.name
            ),
            (None, Some(_), _, _) => bail!("loop {:?}: member needs group", self.name),
            (None, None, None, _) => bail!(
                "loop {:?}: no actuator: set group (a rate group, or with member a ratio group) or rule and condition",
                self.name
            ),
            _ => bail!(
                "loop {:?}: one actuator only: group (with or without member), or rule and condition",
                self.name
            ),
        }
    }

    /// The set point in milliseconds.
    pub fn set_point_ms(&self) -> f64 {
        self.set_point.as_secs_f64() * 1000.0
    }

    /// The deadband in milliseconds.
    pub fn deadband_ms(&self) -> f64 {
        self.deadband.map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }

    /// The controller settings, if the gains are set.
    pub fn pi(&self) -> Result<openqos_control::pi::PiConfig> {
        let (Some(kp), Some(ki)) = (self.kp, self.ki) else {
            bail!(
                "loop {:?} has no gains (kp, ki): run `qosmgr identify` and `qosmgr design` first",
                self.name
            );
        };
        let cfg = openqos_control::pi::PiConfig {
            kp,
            ki,
            min: self.min as f64,
            max: self.max as f64,
            slew: self.slew.unwrap_or(f64::INFINITY),
            deadband: self.deadband_ms(),
        };
        cfg.validate()
            .with_context(|| format!("loop {:?}", self.name))?;
        Ok(cfg)
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
            if self.loops[..i].iter().any(|o| o.name == l.name) {
                bail!("two loops are named {:?}", l.name);
            }
            let act = l.actuator()?;
            if self.loops[..i]
                .iter()
                .any(|o| o.actuator().is_ok_and(|a| a.owner() == act.owner()))
            {
                let (rule, id) = act.owner();
                bail!(
                    "loops {:?} and another drive the same {} {id}",
                    l.name,
                    if rule { "rule" } else { "group" }
                );
            }
            let top = match act {
                Actuator::Rate { .. } => u64::MAX,
                Actuator::Weight { .. } => u64::from(u16::MAX),
                Actuator::Share { .. } => 10_000,
            };
            if l.max > top {
                bail!(
                    "loop {:?}: max is above {top}, the most the {act} can be",
                    l.name
                );
            }
            let ctx = || format!("loop {:?}", l.name);
            if l.port == 0 {
                bail!("{}: port 0", ctx());
            }
            if l.set_point.is_zero() {
                bail!("{}: the set point must be above 0", ctx());
            }
            if l.min == 0 || l.min > l.max {
                bail!("{}: min must be at least 1 and at most max", ctx());
            }
            if l.safe < l.min || l.safe > l.max {
                bail!("{}: safe must be within min..=max", ctx());
            }
            if l.slew.is_some_and(|s| !(s > 0.0 && s.is_finite())) {
                bail!("{}: slew must be a positive number", ctx());
            }
            if l.min_samples == 0 {
                bail!("{}: min_samples must be at least 1", ctx());
            }
            if !(1..=100).contains(&l.rate_periods) {
                bail!("{}: rate_periods must be from 1 to 100", ctx());
            }
            if l.kp.is_some() || l.ki.is_some() {
                l.pi()?;
            }
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
            .find(|l| l.name == name)
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

    #[test]
    fn parses_a_loop() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.period, Duration::from_millis(500));
        assert_eq!(c.lease_ms(), 2000);
        let l = &c.loops[0];
        assert_eq!(
            (l.port, l.group, l.min_samples, l.rate_periods),
            (8080, Some(2), 5, 1)
        );
        assert_eq!(l.actuator().unwrap(), Actuator::Rate { group: 2 });
        assert_eq!(l.measure, Measure::Mean);
        let q =
            Config::parse(&GOOD.replace("group = 2", "group = 2\nmeasure = \"queue\"")).unwrap();
        assert_eq!(q.loops[0].measure, Measure::Queue);
        let o =
            Config::parse(&GOOD.replace("group = 2", "group = 2\nmeasure = \"oldest\"")).unwrap();
        assert_eq!(o.loops[0].measure, Measure::Oldest);
        assert!(Config::parse(&GOOD.replace("group = 2", "group = 2\nmeasure = \"p99\"")).is_err());
        assert_eq!(l.set_point_ms(), 200.0);
        assert_eq!(l.deadband_ms(), 5.0);
        let pi = l.pi().unwrap();
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
            Config::parse(&GOOD.replace(from, to)).map(|c| c.loops[0].actuator().unwrap())
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
        let l = &c.loops[0];
        assert_eq!((l.kp, l.ki), (Some(0.125), Some(0.0625)));
        assert_eq!(l.model.unwrap().b, 2.0);
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
        assert!(implausible(52.0, 1.0, 0.85).is_none());
        assert!(implausible(-3.0, -1.0, 0.6).is_none());
        // fig8's first run: b < 0 for a rate group on the basic port.
        let why = implausible(-95.7, 1.0, 0.282).unwrap();
        assert!(why.contains("must raise"), "{why}");
        assert!(implausible(0.0, 1.0, 0.9).is_some());
        let why = implausible(10.0, 1.0, 0.1).unwrap();
        assert!(why.contains("R^2 is 0.100"), "{why}");
    }
}
