// SPDX-License-Identifier: GPL-2.0

//! `qosmgr`: the openqos QoS manager.
//!
//! Feedback loops that hold a class's mean connection delay at a set point by driving
//! the accept rate of a socket group of the other classes (the paper's Figure 5
//! configuration), or the CPU utilization of a set of server instances by a split range
//! of actuators (Figure 10: more clients to degraded content first, then fewer of them
//! admitted), designed by the ControlWare method: `identify` fits a first-order model
//! at the current load, `design` places the closed loop's poles and checks robustness,
//! `run` runs the loops. Every limit is set with a lease that `run` renews each period,
//! so if the manager dies the kernel puts the configured limits back by itself. See
//! qosmgr(8).

mod config;
mod cpu;
mod drive;
mod metrics;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use config::{
    expected_sign, implausible, ratio_sign, Actuator, Config, LoopConfig, LoopType, Measure,
    UTILIZATION_SIGN,
};
use cpu::CpuSensor;
use drive::Drive;
use openqos::{Client, GroupSettings, GroupType, Matcher};
use openqos_control::{
    deadtime,
    design::Gains,
    ident::{self, prbs},
    noise,
    pi::{Pi, Saturation},
};
use serde::{Deserialize, Serialize};
use std::{
    collections::VecDeque,
    io::Write,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

#[derive(Parser)]
#[command(
    name = "qosmgr",
    version,
    about = "The openqos QoS manager: hold a class's connection delay, or a server's CPU utilization, at a set point",
    after_help = "Workflow:\n  \
        qosmgr identify -c /etc/openqos/qosmgr.toml -l premium --write   # fit a model\n  \
        qosmgr design -c /etc/openqos/qosmgr.toml -l premium --write     # place the poles\n  \
        qosmgr run -c /etc/openqos/qosmgr.toml                           # run the loops\n  \
        qosmgr status                                                    # watch them\n\
        See qosmgr(8)."
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

/// The configuration file and one of its loops.
#[derive(clap::Args)]
struct LoopArgs {
    /// Configuration file.
    #[arg(
        short = 'c',
        long = "config",
        default_value = "/etc/openqos/qosmgr.toml"
    )]
    config: PathBuf,
    /// The loop.
    #[arg(short = 'l', long = "loop")]
    name: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the loops (SIGHUP reloads the configuration, SIGTERM or SIGINT puts every
    /// actuator back to its safe value and exits).
    Run {
        /// Configuration file.
        #[arg(
            short = 'c',
            long = "config",
            default_value = "/etc/openqos/qosmgr.toml"
        )]
        config: PathBuf,
        /// Append the step log (one JSON line per loop and period) to this file instead
        /// of standard output.
        #[arg(long)]
        log: Option<PathBuf>,
        /// Stop after this many periods (tests, experiments).
        #[arg(long, value_name = "N")]
        periods: Option<u64>,
        /// Check the configuration against the kernel and exit (nothing applied).
        #[arg(long)]
        check: bool,
    },
    /// Show the running loops (table, or JSON with -j).
    Status {
        /// The status file `run` writes (default: the configuration's, else
        /// /run/qosmgr/status.json).
        #[arg(long)]
        status_file: Option<PathBuf>,
        /// Read the status file's place from this configuration.
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        /// JSON output (in watch mode one object per line and interval).
        #[arg(short = 'j', long = "json")]
        json: bool,
        /// Watch: show the loops every SECONDS (fractions allowed) until interrupted.
        #[arg(short = 'w', long = "watch", value_name = "SECONDS")]
        watch: Option<f64>,
        /// Watch: stop after COUNT intervals.
        #[arg(short = 'n', long = "count", value_name = "COUNT", requires = "watch")]
        count: Option<u64>,
    },
    /// Step the loop's output between two values (a pseudo-random binary sequence,
    /// one period each, or with --relay a relay around the set point) at the current
    /// load and fit y(k+1) = a y(k) + b u(k) + c.
    Identify {
        #[command(flatten)]
        at: LoopArgs,
        /// Periods to run.
        #[arg(long, default_value_t = 60)]
        periods: usize,
        /// Low output: a delay loop's rate or weight, a whole number (default: a
        /// quarter of the way from min to max); a utilization loop's split-range output,
        /// 0 to 1 (default: 0.1 below the current output, within 0 to 0.8).
        #[arg(long)]
        low: Option<f64>,
        /// High output (default: three quarters of the way; for a utilization loop,
        /// 0.2 above the low output).
        #[arg(long)]
        high: Option<f64>,
        /// A relay experiment instead of the PRBS: the high rate while the delay is
        /// below the set point, the low one while it is above, for a queue that has no
        /// steady state between the two rates (an open-loop class near its balance).
        #[arg(long)]
        relay: bool,
        /// Fit the integrating model y(k+1) = y(k) + b u(k) + c (a fixed at 1): a
        /// queue's delay near its set point integrates arrivals minus service.
        #[arg(long)]
        integrating: bool,
        /// Write the model into the configuration ([loop.model]); refused for a model
        /// whose b has the wrong sign for the actuator or whose R^2 is below 0.3.
        #[arg(long)]
        write: bool,
        /// With --write: write such a model all the same.
        #[arg(long, requires = "write")]
        force: bool,
    },
    /// Turn the loop's model into PI gains by pole placement, check them with b halved
    /// and doubled, and (with --write) put them into the configuration.
    Design {
        #[command(flatten)]
        at: LoopArgs,
        /// Settling time, in periods; or `auto`: the settling time (2 to 50 periods)
        /// whose worst spread of the measurement, with b halved, as modelled and doubled,
        /// is least (see the control library's `noise` module).
        #[arg(long, default_value = "10", value_parser = parse_settling)]
        settling: Settling,
        /// Largest overshoot, a fraction (0.1: 10 %).
        #[arg(long, default_value_t = 0.1)]
        overshoot: f64,
        /// Write kp and ki into the configuration (only if the design is robust).
        #[arg(long)]
        write: bool,
    },
}

/// Seconds since the epoch.
fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A meter's counters at one moment.
#[derive(Clone, Copy, Debug)]
struct Snap {
    accepted: u64,
    delay_ns: u64,
    waiting: u64,
    oldest_ns: u64,
    at: Instant,
}

/// What a period measured on a port.
#[derive(Clone, Copy, Debug)]
struct Measured {
    /// Connections accepted in the period.
    samples: u64,
    /// Their mean queueing delay, ms (`None` without any).
    mean_ms: Option<f64>,
    /// The queue's delay by Little's law: the connections waiting now over their
    /// arrival rate (accepted plus the change of the waiting) in the sensor's window,
    /// ms (`None` if none arrived).
    queue_ms: Option<f64>,
    /// How long the oldest connection waiting now has waited, ms (0 if none waits).
    oldest_ms: f64,
    /// The mean interval between accepts in the sensor's window, ms (`None` without
    /// any).
    accept_gap_ms: Option<f64>,
}

impl Measured {
    /// What happened between `prev` (a period ago) and `now`, with the queue measure's
    /// rate over the window since `old`.
    fn between(prev: Snap, old: Snap, now: Snap) -> Self {
        let samples = now.accepted - prev.accepted;
        let mean_ms =
            (samples > 0).then(|| (now.delay_ns - prev.delay_ns) as f64 / samples as f64 / 1e6);
        let arrived = (now.accepted - old.accepted + now.waiting).saturating_sub(old.waiting);
        let elapsed_ms = now.at.duration_since(old.at).as_secs_f64() * 1000.0;
        let accepted = now.accepted - old.accepted;
        Self {
            samples,
            mean_ms,
            queue_ms: queue_delay_ms(now.waiting, arrived, elapsed_ms),
            oldest_ms: now.oldest_ns as f64 / 1e6,
            accept_gap_ms: (accepted > 0).then(|| elapsed_ms / accepted as f64),
        }
    }

    /// The delay the connection at the head of the queue will be counted with when it
    /// is accepted, ms: its wait so far plus half the interval between accepts. Read at
    /// an instant, the head's wait falls short of that by the time to the next accept,
    /// half the interval on average (the head's wait grows between accepts from the
    /// next connection's to the delay it is accepted with), so a loop holding the bare
    /// wait would hold the accepted connections' mean that much above its set point
    /// (45 ms at 11 accepts/s, fig6). 0 when none waits.
    fn next_accept_ms(&self) -> f64 {
        if self.oldest_ms > 0.0 {
            self.oldest_ms + self.accept_gap_ms.map_or(0.0, |g| g / 2.0)
        } else {
            0.0
        }
    }

    /// The value a loop measuring `how` acts on.
    fn value(&self, how: Measure) -> Option<f64> {
        match how {
            Measure::Mean => self.mean_ms,
            Measure::Queue => self.queue_ms,
            Measure::Oldest => Some(self.next_accept_ms()),
        }
    }

    /// The value a loop measuring `how` acts on, if the period gave one to act on: the
    /// mean and the queue's estimate rest on the connections accepted in the period and
    /// need `min_samples` of them; the oldest connection's wait is read, not estimated.
    fn usable(&self, how: Measure, min_samples: u64) -> Option<f64> {
        self.value(how)
            .filter(|_| how == Measure::Oldest || self.samples >= min_samples)
    }
}

/// The one object a dump filtered by its key returns: `read` names it when the dump
/// fails, `missing` says what an empty dump means.
fn only<T>(
    dump: openqos::Result<Vec<T>>,
    read: impl FnOnce() -> String,
    missing: impl FnOnce() -> String,
) -> Result<T> {
    dump.with_context(read)?
        .into_iter()
        .next()
        .with_context(missing)
}

/// A loop's view of its port's meter: the readings of the last periods, enough to
/// reach back `window` periods for the arrival rate of the queue measure.
#[derive(Debug)]
struct Sensor {
    /// How many periods the arrival rate of [`Measure::Queue`] spans (at least 1).
    window: usize,
    /// Readings, oldest first; the last one is the latest.
    hist: VecDeque<Snap>,
}

impl Sensor {
    fn new(window: usize) -> Self {
        Self {
            window: window.max(1),
            hist: VecDeque::new(),
        }
    }

    /// Forgets every reading: the next one starts afresh.
    fn clear(&mut self) {
        self.hist.clear();
    }

    /// Adds `now`. Returns the reading one period ago and the one `window` periods ago
    /// (or the oldest there is), or `None` on the first reading.
    fn push(&mut self, now: Snap) -> Option<(Snap, Snap)> {
        if self
            .hist
            .back()
            .is_some_and(|p| p.accepted > now.accepted || p.delay_ns > now.delay_ns)
        {
            // The meter was made anew (its counters started again).
            self.hist.clear();
        }
        let prev = self.hist.back().copied();
        self.hist.push_back(now);
        while self.hist.len() > self.window + 1 {
            self.hist.pop_front();
        }
        Some((prev?, self.hist[0]))
    }
}

/// Reads `port`'s meter and the change since the sensor's last reading.
fn measure(c: &mut Client, port: u16, sensor: &mut Sensor) -> Result<Measured> {
    let m = only(
        c.meters(Some(port)),
        || format!("cannot read the meter of port {port}"),
        || format!("port {port} is not metered"),
    )?;
    let now = Snap {
        accepted: m.accepted,
        delay_ns: m.delay_ns,
        waiting: m.waiting,
        oldest_ns: m.oldest_ns,
        at: Instant::now(),
    };
    // First reading, or the meter was made anew: nothing happened since it, so only
    // what is read now (the oldest connection's wait) is known.
    let (prev, old) = sensor.push(now).unwrap_or((now, now));
    Ok(Measured::between(prev, old, now))
}

/// Little's law, `W = L / λ`: `waiting` connections that arrive at `arrived` per
/// `elapsed_ms` wait `waiting / λ` (ms) on average.
///
/// The arrival rate rather than the accept rate: the law's λ, and the steadier of the
/// two when clients arrive at a steady rate and the server's pace varies. A noisy rate
/// in the denominator would also bias the estimate upwards (the mean of `1/x` is above
/// `1/mean(x)`), and a loop would then hold the real delay below its set point (by
/// about 4 % at 2 s in fig6 with the accept rate).
fn queue_delay_ms(waiting: u64, arrived: u64, elapsed_ms: f64) -> Option<f64> {
    (arrived > 0 && elapsed_ms > 0.0).then(|| waiting as f64 * elapsed_ms / arrived as f64)
}

/// The actuator's value now, checking that it is what the configuration says (an
/// accept-rate group, a member of a ratio group, a probabilistic rule's condition).
fn act_read(c: &mut Client, a: Actuator) -> Result<u64> {
    match a {
        Actuator::Rate { group } | Actuator::Weight { group, .. } => {
            let g = group_of(c, group)?;
            let want = match a {
                Actuator::Rate { .. } => GroupType::Rate,
                _ => GroupType::Ratio,
            };
            if g.kind != want {
                bail!(
                    "group {group} is a {} group; the {a} needs a {} group",
                    g.kind.name(),
                    want.name()
                );
            }
            match a {
                Actuator::Weight { port, .. } => g
                    .members
                    .iter()
                    .find(|m| m.port == port)
                    .map(|m| u64::from(m.weight))
                    .with_context(|| format!("port {port} is not a member of group {group}")),
                _ => g.rate.with_context(|| format!("group {group} has no rate")),
            }
        }
        Actuator::Share { rule, condition } => {
            let (w, _) = share(c, rule, condition)?;
            Ok(u64::from(w))
        }
    }
}

/// Whether `act` works on `port` itself: a rate group it is a member of, its own weight
/// in a ratio group, a probabilistic condition that sends connections to it (see
/// [`config::expected_sign`]).
fn acts_on(c: &mut Client, act: Actuator, port: u16) -> Result<bool> {
    Ok(match act {
        Actuator::Rate { group } => group_of(c, group)?.members.iter().any(|m| m.port == port),
        Actuator::Weight { port: p, .. } => p == port,
        Actuator::Share { rule, condition } => share(c, rule, condition)?.1 == port,
    })
}

/// Group `group`, which must exist.
fn group_of(c: &mut Client, group: u32) -> Result<openqos::Group> {
    only(
        c.groups(Some(group)),
        || format!("cannot read group {group}"),
        || format!("group {group} does not exist"),
    )
}

/// The weight and outgoing port of condition `condition` of the probabilistic rule on
/// `rule`.
fn share(c: &mut Client, rule: u16, condition: u32) -> Result<(u16, u16)> {
    let r = only(
        c.rules(Some(rule)),
        || format!("cannot read rule {rule}"),
        || format!("no rule on port {rule}"),
    )?;
    let cond = r
        .conditions
        .iter()
        .find(|k| k.index == condition)
        .with_context(|| format!("rule {rule} has no condition {condition}"))?;
    match cond.matcher {
        Matcher::Weight { weight } => Ok((weight, cond.out_port)),
        _ => bail!("rule {rule} is not a probabilistic rule"),
    }
}

/// Checks that a probabilistic condition's weight can reach `highest` (the most a loop
/// sets it to): the kernel refuses weights that add up to more than 10000 in one rule,
/// so with the rule's other conditions as they are now, a loop asking for more would
/// fail in mid-run. Other actuators have nothing to check.
fn check_room(c: &mut Client, act: Actuator, highest: u64) -> Result<()> {
    let Actuator::Share { rule, condition } = act else {
        return Ok(());
    };
    let r = only(
        c.rules(Some(rule)),
        || format!("cannot read rule {rule}"),
        || format!("no rule on port {rule}"),
    )?;
    let others: u64 = r
        .conditions
        .iter()
        .filter(|k| k.index != condition)
        .filter_map(|k| match k.matcher {
            Matcher::Weight { weight } => Some(u64::from(weight)),
            _ => None,
        })
        .sum();
    if others + highest > 10_000 {
        bail!(
            "the {act} goes up to {highest}, but rule {rule}'s other conditions weigh {others}: together more than 10000, which the kernel refuses"
        );
    }
    Ok(())
}

/// Sets the actuator to `value`; a rate is leased for `lease_ms` (`None`: for good).
/// Weights have no lease in the kernel: they stay until set again.
fn act_set(c: &mut Client, a: Actuator, value: u64, lease_ms: Option<u64>) -> Result<()> {
    match a {
        Actuator::Rate { group } => {
            let s = GroupSettings {
                rate: Some(value),
                lease_ms: lease_ms.map(|ms| ms.min(u64::from(u32::MAX)) as u32),
                ..Default::default()
            };
            c.set_group(group, &s)
        }
        Actuator::Weight { group, port } => {
            c.set_group_weight(group, port, value.min(u64::from(u16::MAX)) as u16)
        }
        Actuator::Share { rule, condition } => {
            let (_, out) = share(c, rule, condition)?;
            let weight = value.min(10_000) as u16;
            c.set_condition(rule, Some(condition), Matcher::Weight { weight }, out)
        }
    }
    .with_context(|| format!("cannot set the {a}"))
}

/// Reads every actuator of `drive`, checking that each is what the configuration says.
fn drive_read(c: &mut Client, drive: &Drive) -> Result<Vec<u64>> {
    drive.outputs().iter().map(|o| act_read(c, o.act)).collect()
}

/// Sets the actuators of `drive` to `values`, one each, in order; a rate with a lease of
/// `lease_ms` (`None`: for good). Stops at the first that fails.
fn drive_set(c: &mut Client, drive: &Drive, values: &[u64], lease_ms: Option<u64>) -> Result<()> {
    for (o, v) in drive.outputs().iter().zip(values) {
        act_set(c, o.act, *v, lease_ms)?;
    }
    Ok(())
}

/// What a loop measures.
#[derive(Debug)]
enum Probe {
    /// A port's meter: a delay loop's.
    Port {
        port: u16,
        measure: Measure,
        min_samples: u64,
        sensor: Sensor,
    },
    /// The CPU time of cgroups: a utilization loop's.
    Cpu(CpuSensor),
    /// Two ports' meters (both [`Probe::Port`]): a ratio loop's, the first's delay
    /// over the second's.
    Ratio(Box<(Probe, Probe)>),
}

/// The ratio of two delays, if both were measured and the denominator is above 0.
fn delay_ratio(num: Option<f64>, den: Option<f64>) -> Option<f64> {
    match (num, den) {
        (Some(n), Some(d)) if d > 0.0 && n >= 0.0 => Some(n / d),
        _ => None,
    }
}

/// One period's reading of a [`Probe`].
struct Reading {
    /// The measurement the loop acts on, if the period gave one to act on.
    usable: Option<f64>,
    /// The measurement shown (a delay loop's even when too few connections were
    /// accepted to act on it).
    shown: Option<f64>,
    /// The probe's own fields for the step log.
    log: serde_json::Map<String, serde_json::Value>,
    /// Connections accepted in the period (delay loops).
    samples: Option<u64>,
}

impl Probe {
    /// The probe of loop `l`; a utilization loop without `cpus` divides by the online
    /// CPUs.
    fn new(l: &LoopConfig) -> Result<Self> {
        Ok(match l {
            LoopConfig::Delay(d) => Probe::Port {
                port: d.port,
                measure: d.measure,
                min_samples: d.min_samples,
                sensor: Sensor::new(d.rate_periods),
            },
            LoopConfig::Utilization(u) => {
                let cpus = match u.cpus {
                    Some(n) => n,
                    None => cpu::online_cpus()?,
                };
                Probe::Cpu(CpuSensor::new(u.cgroups.clone(), cpus))
            }
            LoopConfig::Ratio(r) => {
                let port = |port| Probe::Port {
                    port,
                    measure: r.measure,
                    min_samples: r.min_samples,
                    sensor: Sensor::new(r.rate_periods),
                };
                Probe::Ratio(Box::new((port(r.port), port(r.relative_to))))
            }
        })
    }

    /// Reads the sensor: what happened since the last reading.
    fn read(&mut self, c: &mut Client) -> Result<Reading> {
        match self {
            Probe::Port {
                port,
                measure: how,
                min_samples,
                sensor,
            } => {
                let m = measure(c, *port, sensor)?;
                let shown = m.value(*how);
                let log = [
                    ("measured_ms", serde_json::json!(shown)),
                    ("mean_ms", serde_json::json!(m.mean_ms)),
                    ("queue_ms", serde_json::json!(m.queue_ms)),
                    ("oldest_ms", serde_json::json!(m.oldest_ms)),
                    ("samples", serde_json::json!(m.samples)),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
                Ok(Reading {
                    usable: m.usable(*how, *min_samples),
                    shown,
                    log,
                    samples: Some(m.samples),
                })
            }
            Probe::Cpu(s) => {
                let u = s.read()?;
                let mut log = serde_json::Map::new();
                log.insert("cpus".into(), serde_json::json!(s.cpus()));
                Ok(Reading {
                    usable: u,
                    shown: u,
                    log,
                    samples: None,
                })
            }
            Probe::Ratio(pair) => {
                let (num, den) = (pair.0.read(c)?, pair.1.read(c)?);
                let mut log = serde_json::Map::new();
                for (side, r) in [("port", &num), ("relative", &den)] {
                    log.insert(format!("{side}_ms"), serde_json::json!(r.shown));
                    log.insert(format!("{side}_samples"), serde_json::json!(r.samples));
                }
                Ok(Reading {
                    usable: delay_ratio(num.usable, den.usable),
                    shown: delay_ratio(num.shown, den.shown),
                    log,
                    samples: match (num.samples, den.samples) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        _ => None,
                    },
                })
            }
        }
    }

    /// Forgets every reading: the next one starts afresh.
    fn clear(&mut self) {
        match self {
            Probe::Port { sensor, .. } => sensor.clear(),
            Probe::Cpu(s) => s.clear(),
            Probe::Ratio(pair) => {
                pair.0.clear();
                pair.1.clear();
            }
        }
    }
}

/// How a loop is doing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum State {
    /// Measuring and acting.
    Run,
    /// Nothing to act on this period (too few connections, or a utilization loop's
    /// first reading): the output is held.
    Hold,
    /// The sensor or an actuator failed: every actuator is back at its safe value
    /// until they all answer again.
    Released,
}

impl State {
    /// Its name, as in the status file.
    fn name(&self) -> &'static str {
        match self {
            State::Run => "run",
            State::Hold => "hold",
            State::Released => "released",
        }
    }
}

/// A running loop.
struct Loop {
    cfg: LoopConfig,
    probe: Probe,
    /// Its actuators, each applied in whole values with the output's fraction carried on.
    drive: Drive,
    /// Per actuator of a split range, for the accept-rate stages: what their groups
    /// admitted, to find the stage's dead zone ([`Admitted`]).
    admitted: Vec<Option<Admitted>>,
    pi: Pi,
    state: State,
    status: LoopStatus,
}

/// What an accept-rate stage's group admitted in the last period: the connections its
/// member ports' servers accepted (their meters: a group's ports are metered), per
/// second. A rate limit well above it does nothing, and the split range's output skips
/// that part of the stage instead of integrating through it ([`Drive::skip_dead_zones`]).
#[derive(Debug)]
struct Admitted {
    group: u32,
    /// The members' accepted connections at the last reading, and when.
    last: Option<(u64, Instant)>,
}

impl Admitted {
    fn new(group: u32) -> Self {
        Self { group, last: None }
    }

    /// Connections per second admitted since the last reading; `None` at the first
    /// reading, after a failed one (a member not metered, the group gone: the loop's
    /// own checks report those), or if a counter went back.
    fn read(&mut self, c: &mut Client) -> Option<f64> {
        let now = Instant::now();
        let prev = self.last.take();
        let g = group_of(c, self.group).ok()?;
        let mut total = 0u64;
        for m in &g.members {
            let meter = c.meters(Some(m.port)).ok()?.into_iter().next()?;
            total = total.saturating_add(meter.accepted);
        }
        self.last = Some((total, now));
        let (before, at) = prev?;
        let dt = now.saturating_duration_since(at).as_secs_f64();
        (total >= before && dt > 0.0).then(|| (total - before) as f64 / dt)
    }
}

/// One loop in the status file.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LoopStatus {
    name: String,
    /// Its type (`delay`, `utilization`).
    #[serde(rename = "type")]
    kind: String,
    /// The unit of `set_point` and `measured` (`ms`, `%`).
    unit: String,
    /// What it drives, in words.
    actuator: String,
    state: State,
    set_point: f64,
    measured: Option<f64>,
    /// The controller's output: a delay loop's actuator value before rounding, a
    /// utilization loop's split-range output (0 to 1).
    output: f64,
    saturation: String,
    /// Every actuator and the value it was set to last, in order.
    actuators: Vec<ActuatorStatus>,
    reason: Option<String>,
    /// A delay loop's port and samples, and its set point and measurement again under
    /// their names from before `unit` (scripts read them).
    #[serde(flatten)]
    delay: Option<DelayStatus>,
}

/// What only a delay loop has in the status file.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct DelayStatus {
    port: u16,
    samples: u64,
    set_point_ms: f64,
    measured_ms: Option<f64>,
}

/// One actuator of a loop in the status file.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ActuatorStatus {
    actuator: String,
    value: u64,
}

impl LoopStatus {
    /// The status of loop `l` before its first period: its actuators at `values`, the
    /// controller's output at `output`.
    fn new(l: &LoopConfig, drive: &Drive, output: f64, values: &[u64]) -> Self {
        let kind = l.kind();
        Self {
            name: l.name().into(),
            kind: kind.name().into(),
            unit: kind.unit().into(),
            actuator: drive.describe(),
            state: State::Hold,
            set_point: l.set_point(),
            measured: None,
            output,
            saturation: Saturation::None.name().into(),
            actuators: Self::actuators(drive, values),
            reason: None,
            delay: match l {
                LoopConfig::Delay(d) => Some(DelayStatus {
                    port: d.port,
                    samples: 0,
                    set_point_ms: d.set_point_ms(),
                    measured_ms: None,
                }),
                LoopConfig::Utilization(_) | LoopConfig::Ratio(_) => None,
            },
        }
    }

    fn actuators(drive: &Drive, values: &[u64]) -> Vec<ActuatorStatus> {
        drive
            .outputs()
            .iter()
            .zip(values)
            .map(|(o, v)| ActuatorStatus {
                actuator: o.act.to_string(),
                value: *v,
            })
            .collect()
    }
}

/// The status file.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Status {
    pid: u32,
    updated: f64,
    period_ms: u64,
    lease_ms: u64,
    running: bool,
    loops: Vec<LoopStatus>,
}

/// Checks `cfg` against the kernel (every port metered and every cgroup readable,
/// every actuator of the kind configured, gains set) and builds its loops, each
/// starting from its actuators' values now (bumpless). Nothing is changed in the
/// kernel.
fn start(c: &mut Client, cfg: &Config) -> Result<Vec<Loop>> {
    let mut loops = Vec::new();
    for l in &cfg.loops {
        let ctx = || format!("loop {:?}", l.name());
        let pi_cfg = l.pi()?;
        let mut probe = Probe::new(l).with_context(ctx)?;
        probe.read(c).with_context(ctx)?;
        let drive = Drive::new(l)?;
        let current = drive_read(c, &drive).with_context(ctx)?;
        for o in drive.outputs() {
            check_room(c, o.act, o.bounds().1).with_context(ctx)?;
        }
        let pi = Pi::new(pi_cfg, drive.output_for(&current))?;
        let mut admitted: Vec<Option<Admitted>> = drive
            .outputs()
            .iter()
            .map(|o| match o.act {
                Actuator::Rate { group } if drive.is_split() => Some(Admitted::new(group)),
                _ => None,
            })
            .collect();
        for a in admitted.iter_mut().flatten() {
            a.read(c);
        }
        loops.push(Loop {
            status: LoopStatus::new(l, &drive, pi.output(), &current),
            cfg: l.clone(),
            probe,
            drive,
            admitted,
            pi,
            state: State::Hold,
        });
    }
    Ok(loops)
}

/// The step log.
struct Log(Box<dyn Write>);

impl Log {
    fn line(&mut self, v: serde_json::Value) {
        // A log that cannot be written must not stop the loops.
        let _ = writeln!(self.0, "{v}");
        let _ = self.0.flush();
    }
}

/// Puts every actuator of loop `l` back to its safe value, for good (no lease).
fn release(c: &mut Client, l: &mut Loop, reason: String, log: &mut Log) {
    let safe = l.drive.safe_values();
    // Every actuator, even after one failed.
    let applied: Vec<bool> = l
        .drive
        .outputs()
        .iter()
        .zip(&safe)
        .map(|(o, v)| act_set(c, o.act, *v, None).is_ok())
        .collect();
    if l.state != State::Released {
        let mut line = serde_json::json!({
            "time": now_s(), "loop": l.cfg.name(), "state": "released",
            "reason": reason, "applied": applied.iter().all(|a| *a),
        });
        if l.drive.is_split() {
            line["stages"] = l
                .drive
                .outputs()
                .iter()
                .zip(&applied)
                .map(|(o, a)| {
                    serde_json::json!({"actuator": o.act.to_string(), "safe": o.safe, "applied": a})
                })
                .collect();
        } else {
            line["safe"] = serde_json::json!(safe[0]);
        }
        log.line(line);
    }
    l.state = State::Released;
    l.probe.clear();
    for a in l.admitted.iter_mut().flatten() {
        a.last = None;
    }
    l.status.state = State::Released;
    l.status.reason = Some(reason);
    l.status.output = l.drive.output_for(&safe);
    l.status.actuators = LoopStatus::actuators(&l.drive, &safe);
}

/// One period of loop `l`.
fn period(c: &mut Client, l: &mut Loop, lease_ms: u64, log: &mut Log) {
    let m = match l.probe.read(c) {
        Ok(m) => m,
        Err(e) => return release(c, l, format!("{e:#}"), log),
    };
    if l.state == State::Released {
        // The sensor answers again: start from the actuators as they are (bumpless).
        match drive_read(c, &l.drive) {
            Ok(current) => {
                l.pi.reset_output(l.drive.output_for(&current));
                l.drive.reset();
            }
            Err(e) => return release(c, l, format!("{e:#}"), log),
        }
        l.state = State::Hold;
        l.status.reason = None;
        log.line(serde_json::json!({"time": now_s(), "loop": l.cfg.name(), "state": "resumed"}));
        // This period's counters started with this reading.
        return;
    }
    let sp = l.cfg.set_point();
    // The rate stages' dead zones: read every period, so that each reading spans one.
    let rates: Vec<Option<f64>> = l
        .admitted
        .iter_mut()
        .map(|a| a.as_mut().and_then(|a| a.read(c)))
        .collect();
    let mut skipped = serde_json::Value::Null;
    if let Some(y) = m.usable {
        let cfg = *l.pi.config();
        let from = l.pi.output();
        if (sp - y).abs() >= cfg.deadband {
            if let Some((i, to)) = l.drive.skip_dead_zones(from, &rates, cfg.ki, sp - y) {
                l.pi.reset_output(to);
                skipped = serde_json::json!({
                    "stage": i + 1, "admitted_per_s": rates[i], "from": from, "to": to,
                });
            }
        }
    }
    let (state, step) = match m.usable {
        Some(y) => (State::Run, Some(l.pi.step(sp, y))),
        None => (State::Hold, None),
    };
    let output = step.map_or(l.pi.output(), |s| s.output);
    // Whole values that average to what the output asks of each actuator (an accept
    // rate of 1.5/s is 1 and 2 in turn, not 2 for ever).
    let values = l.drive.quantize(output);
    if let Err(e) = drive_set(c, &l.drive, &values, Some(lease_ms)) {
        return release(c, l, format!("{e:#}"), log);
    }
    l.state = state.clone();
    let sat = step.map_or(Saturation::None, |s| s.saturation);
    let kind = l.cfg.kind();
    let lease = |a: Actuator| a.leased().then_some(lease_ms);
    let mut line = serde_json::json!({
        "time": now_s(),
        "loop": l.cfg.name(),
        "type": kind.name(),
        "state": state,
        "set_point": sp,
        "measured": m.shown,
        "unit": kind.unit(),
        "error": step.map(|s| s.error),
        "p_term": step.map(|s| s.p_term),
        "i_term": step.map(|s| s.i_term),
        "unclamped": step.map(|s| s.unclamped),
        "output": output,
        "saturation": sat.name(),
    });
    for (k, v) in m.log {
        line[k] = v;
    }
    if !skipped.is_null() {
        line["dead_zone_skipped"] = skipped;
    }
    let outputs = l.drive.outputs();
    if l.drive.is_split() {
        line["stages"] = outputs
            .iter()
            .zip(&values)
            .map(|(o, v)| {
                serde_json::json!({
                    "actuator": o.act.to_string(), "value": v, "lease_ms": lease(o.act),
                })
            })
            .collect();
    } else {
        line["value"] = serde_json::json!(values[0]);
        line["actuator"] = serde_json::json!(l.status.actuator);
        line["lease_ms"] = serde_json::json!(lease(outputs[0].act));
    }
    if kind == LoopType::Delay {
        line["set_point_ms"] = serde_json::json!(sp);
    }
    log.line(line);
    l.status.state = state;
    l.status.measured = m.shown;
    l.status.output = output;
    l.status.saturation = sat.name().into();
    l.status.actuators = LoopStatus::actuators(&l.drive, &values);
    l.status.reason = None;
    if let Some(d) = &mut l.status.delay {
        d.measured_ms = m.shown;
        d.samples = m.samples.unwrap_or(0);
    }
}

/// The loops' state of a period, for the metrics endpoint.
fn render_metrics(cfg: &Config, loops: &[Loop], periods: u64) -> String {
    let samples: Vec<metrics::LoopSample<'_>> = loops
        .iter()
        .map(|l| metrics::LoopSample {
            name: &l.status.name,
            kind: l.cfg.kind(),
            state: l.status.state.name(),
            set_point: l.status.set_point,
            measured: l.status.measured,
            samples: l.status.delay.as_ref().map(|d| d.samples),
            output: l.status.output,
            actuators: if l.drive.is_split() {
                // Each stage's value as the output asks it (before rounding), as a
                // delay loop's output is its actuator's.
                l.drive
                    .outputs()
                    .iter()
                    .zip(l.drive.values(l.status.output))
                    .map(|(o, v)| (o.act.to_string(), v))
                    .collect()
            } else {
                vec![(l.status.actuator.clone(), l.status.output)]
            },
        })
        .collect();
    metrics::render(
        cfg.period.as_secs_f64(),
        cfg.lease_ms() as f64 / 1e3,
        periods,
        &samples,
    )
}

fn write_status(path: &str, cfg: &Config, loops: &[Loop], running: bool) {
    let st = Status {
        pid: std::process::id(),
        updated: now_s(),
        period_ms: cfg.period.as_millis() as u64,
        lease_ms: cfg.lease_ms(),
        running,
        loops: loops.iter().map(|l| l.status.clone()).collect(),
    };
    let p = Path::new(path);
    if let Some(dir) = p.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let tmp = p.with_extension("new");
    if let Ok(text) = serde_json::to_string_pretty(&st) {
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, p);
        }
    }
}

fn run(config: &Path, log: Option<&Path>, periods: Option<u64>, check: bool) -> Result<()> {
    let mut cfg = Config::load(config)?;
    let mut c = Client::connect().context("cannot talk to the openqos module")?;
    let mut loops = start(&mut c, &cfg)?;
    if check {
        println!(
            "{}: {} loops, all checked against the kernel",
            config.display(),
            loops.len()
        );
        return Ok(());
    }
    let mut log = Log(match log {
        Some(p) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open {}", p.display()))?,
        ),
        None => Box::new(std::io::stdout()),
    });
    // Started once: a reload may change the loops, not where they are served.
    let endpoint = cfg
        .metrics_listen
        .as_deref()
        .map(metrics::Endpoint::start)
        .transpose()?;
    let term = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, term.clone())?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())?;
    log.line(serde_json::json!({
        "time": now_s(), "event": "start", "loops": cfg.loops.len(),
        "period_ms": cfg.period.as_millis() as u64, "lease_ms": cfg.lease_ms(),
    }));
    let mut next = Instant::now() + cfg.period;
    let mut done = 0u64;
    loop {
        while Instant::now() < next && !term.load(Ordering::Relaxed) && !hup.load(Ordering::Relaxed)
        {
            std::thread::sleep((next - Instant::now()).min(Duration::from_millis(50)));
        }
        if term.load(Ordering::Relaxed) || periods.is_some_and(|n| done >= n) {
            break;
        }
        if hup.swap(false, Ordering::Relaxed) {
            // All or nothing: the new configuration replaces the old only if it parses
            // and checks against the kernel.
            match Config::load(config).and_then(|new| Ok((start(&mut c, &new)?, new))) {
                Ok((new_loops, new)) => {
                    // Actuators no loop drives any more go back to their safe values.
                    let driven: Vec<Actuator> = new
                        .loops
                        .iter()
                        .filter_map(|l| l.actuators().ok())
                        .flatten()
                        .collect();
                    for old in loops.iter_mut() {
                        let gone: Vec<(Actuator, u64)> = old
                            .drive
                            .outputs()
                            .iter()
                            .filter(|o| !driven.contains(&o.act))
                            .map(|o| (o.act, o.safe))
                            .collect();
                        if gone.len() == old.drive.outputs().len() {
                            release(
                                &mut c,
                                old,
                                "removed from the configuration".into(),
                                &mut log,
                            );
                            continue;
                        }
                        for (act, safe) in gone {
                            let applied = act_set(&mut c, act, safe, None).is_ok();
                            log.line(serde_json::json!({
                                "time": now_s(), "loop": old.cfg.name(), "event": "actuator removed",
                                "actuator": act.to_string(), "safe": safe, "applied": applied,
                            }));
                        }
                    }
                    loops = new_loops;
                    cfg = new;
                    log.line(serde_json::json!({"time": now_s(), "event": "reloaded", "loops": cfg.loops.len()}));
                }
                Err(e) => log.line(serde_json::json!({
                    "time": now_s(), "event": "reload refused", "error": format!("{e:#}"),
                })),
            }
            continue;
        }
        let lease = cfg.lease_ms();
        for l in loops.iter_mut() {
            period(&mut c, l, lease, &mut log);
        }
        write_status(&cfg.status_file, &cfg, &loops, true);
        done += 1;
        if let Some(e) = &endpoint {
            e.publish(render_metrics(&cfg, &loops, done));
        }
        next += cfg.period;
        let now = Instant::now();
        if next < now {
            next = now + cfg.period;
        }
    }
    // Every actuator back to its safe value, for good.
    for l in loops.iter_mut() {
        release(&mut c, l, "qosmgr stopped".into(), &mut log);
    }
    write_status(&cfg.status_file, &cfg, &loops, false);
    log.line(serde_json::json!({"time": now_s(), "event": "stop"}));
    Ok(())
}

fn status(
    file: Option<PathBuf>,
    config: Option<PathBuf>,
    json: bool,
    watch: Option<f64>,
    count: Option<u64>,
) -> Result<()> {
    let path = match (file, config) {
        (Some(f), _) => f,
        (None, Some(c)) => PathBuf::from(Config::load(&c)?.status_file),
        (None, None) => PathBuf::from(config::STATUS_FILE),
    };
    let Some(every) = watch else {
        return status_once(&path, json, false);
    };
    if !(every.is_finite() && every > 0.0) {
        bail!("--watch takes a positive number of seconds");
    }
    let mut shown = 0u64;
    loop {
        status_once(&path, json, true)?;
        shown += 1;
        if count.is_some_and(|c| shown >= c) {
            return Ok(());
        }
        if !json {
            println!();
        }
        std::thread::sleep(Duration::from_secs_f64(every));
    }
}

/// Shows the status file at `path` once: a table, or JSON (on one line if `compact`).
fn status_once(path: &Path, json: bool, compact: bool) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {} (is qosmgr running?)", path.display()))?;
    let st: Status = serde_json::from_str(&text).context("malformed status file")?;
    let age = now_s() - st.updated;
    let stale = st.running && age * 1000.0 > 3.0 * st.period_ms as f64;
    if json {
        let mut v = serde_json::to_value(&st)?;
        v["age_s"] = serde_json::json!(age);
        v["stale"] = serde_json::json!(stale);
        if compact {
            println!("{}", serde_json::to_string(&v)?);
            std::io::stdout().flush()?;
        } else {
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        return Ok(());
    }
    println!(
        "qosmgr pid {} {}, updated {:.1} s ago, period {} ms, leases {} ms{}",
        st.pid,
        if st.running { "running" } else { "stopped" },
        age,
        st.period_ms,
        st.lease_ms,
        if stale { " (STALE: not running?)" } else { "" }
    );
    println!(
        "{:<16} {:>5} {:<8} {:>10} {:>10} {:<4} {:>7} {:>9} {:<5} actuator",
        "loop", "port", "state", "set", "measured", "unit", "samples", "output", "sat"
    );
    for l in &st.loops {
        let (port, samples) = match &l.delay {
            Some(d) => (d.port.to_string(), d.samples.to_string()),
            None => ("-".into(), "-".into()),
        };
        // A split range's output is a fraction; an actuator's value is not.
        let output = if l.delay.is_some() {
            format!("{:.1}", l.output)
        } else {
            format!("{:.3}", l.output)
        };
        println!(
            "{:<16} {:>5} {:<8} {:>10.1} {:>10} {:<4} {:>7} {:>9} {:<5} {}{}",
            l.name,
            port,
            l.state.name(),
            l.set_point,
            l.measured.map_or("-".into(), |m| format!("{m:.1}")),
            l.unit,
            samples,
            output,
            l.saturation,
            l.actuator,
            l.reason
                .as_ref()
                .map_or(String::new(), |r| format!("  ({r})"))
        );
        if l.delay.is_none() {
            for (i, a) in l.actuators.iter().enumerate() {
                println!("{:<16} stage {}: {} = {}", "", i + 1, a.actuator, a.value);
            }
        }
    }
    std::io::stdout().flush()?;
    Ok(())
}

/// How `identify` moves the actuator.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Excitation {
    Prbs,
    Relay,
}

/// The width of the step a utilization loop's identification makes by default, in
/// units of the split range's output.
const IDENT_STEP: f64 = 0.2;

/// The two outputs `identify` steps loop `l` between: `low` and `high` if given, else
/// a delay loop's quarter and three quarters of `min..=max`, a utilization loop's
/// [`IDENT_STEP`] around `current` (the output the actuators' values give now).
fn identify_levels(
    l: &LoopConfig,
    (low, high): (Option<f64>, Option<f64>),
    current: f64,
) -> Result<(f64, f64)> {
    let (min, max) = match l {
        LoopConfig::Delay(d) => (d.min, d.max),
        LoopConfig::Ratio(r) => (r.min, r.max),
        LoopConfig::Utilization(_) => {
            let low =
                low.unwrap_or_else(|| (current - IDENT_STEP / 2.0).clamp(0.0, 1.0 - IDENT_STEP));
            let high = high.unwrap_or((low + IDENT_STEP).min(1.0));
            if !(0.0 <= low && low < high && high <= 1.0) {
                bail!(
                    "the outputs of a utilization loop must satisfy 0 <= low < high <= 1 ({low}, {high})"
                );
            }
            return Ok((low, high));
        }
    };
    let span = max - min;
    let low = low.unwrap_or((min + span / 4) as f64);
    let high = high.unwrap_or((max - span / 4) as f64);
    if low.fract() != 0.0 || high.fract() != 0.0 {
        bail!(
            "a {} loop's --low and --high are whole numbers (a rate or a weight)",
            l.kind().name()
        );
    }
    if !(low < high && low >= min as f64 && high <= max as f64) {
        bail!("the rates must satisfy min <= low < high <= max ({min} <= {low} < {high} <= {max})");
    }
    Ok((low, high))
}

fn identify(
    config: &Path,
    name: &str,
    periods: usize,
    levels: (Option<f64>, Option<f64>),
    excitation: Excitation,
    integrating: bool,
    (write, force): (bool, bool),
) -> Result<()> {
    let cfg = Config::load(config)?;
    let l = cfg.find(name)?.clone();
    if !matches!(l, LoopConfig::Utilization(_)) {
        // Checked before anything is touched (a delay or ratio loop's defaults need no
        // kernel).
        identify_levels(&l, levels, f64::NAN)?;
    }
    if periods < ident::MIN_SAMPLES + 2 {
        bail!("at least {} periods", ident::MIN_SAMPLES + 2);
    }
    let mut c = Client::connect().context("cannot talk to the openqos module")?;
    let mut drive = Drive::new(&l)?;
    let before = drive_read(&mut c, &drive)?;
    let (low, high) = identify_levels(&l, levels, drive.output_for(&before))?;
    let kind = l.kind();
    let unit = kind.unit();
    let sign = match &l {
        LoopConfig::Delay(d) => {
            let act = drive.outputs()[0].act;
            expected_sign(act, acts_on(&mut c, act, d.port)?)
        }
        LoopConfig::Utilization(_) => UTILIZATION_SIGN,
        LoopConfig::Ratio(r) => {
            let act = drive.outputs()[0].act;
            ratio_sign(
                act,
                acts_on(&mut c, act, r.port)?,
                acts_on(&mut c, act, r.relative_to)?,
            )
            .with_context(|| {
                format!(
                    "loop {name:?}: the {act} works on both ports {} and {} or on neither: its effect on the ratio is unknown",
                    r.port, r.relative_to
                )
            })?
        }
    };
    let mut probe = Probe::new(&l)?;
    probe.read(&mut c)?;
    let lease = cfg.lease_ms();
    let seq = prbs(periods);
    let mut ys: Vec<Option<f64>> = Vec::new();
    let mut us: Vec<f64> = Vec::new();
    let run = (|| -> Result<()> {
        // One period at the low output first, so that y(0) is measured under a known
        // input.
        let values = drive.quantize(low);
        drive_set(&mut c, &drive, &values, Some(lease))?;
        std::thread::sleep(cfg.period);
        ys.push(probe.read(&mut c)?.usable);
        let mut high_now = false;
        for (k, h) in seq.iter().enumerate() {
            high_now = match excitation {
                Excitation::Prbs => *h,
                Excitation::Relay => ident::relay(ys[k], l.set_point(), high_now, sign > 0.0),
            };
            let u = if high_now { high } else { low };
            let values = drive.quantize(u);
            drive_set(&mut c, &drive, &values, Some(lease))?;
            us.push(u);
            std::thread::sleep(cfg.period);
            let m = probe.read(&mut c)?;
            let y = m.usable;
            ys.push(y);
            let level = if drive.is_split() {
                format!("output {u:.3} {values:?}")
            } else {
                format!("rate {u:>6}")
            };
            eprintln!(
                "period {:>3}/{periods}: {level}  {} {}{}",
                k + 1,
                kind.quantity(),
                y.map_or("-".into(), |y| format!("{y:.2} {unit}")),
                m.samples
                    .map_or(String::new(), |n| format!("  ({n} accepted)"))
            );
        }
        Ok(())
    })();
    // The actuators as they were, whatever happened.
    let restored = drive_set(&mut c, &drive, &before, None);
    run?;
    restored?;
    // The model for each dead time d (y(k+1) from u(k-d)): the shortest whose fit is
    // within 0.02 of the best R^2.
    let fits: Vec<(usize, Result<ident::Model, ident::IdentError>)> = (0..=deadtime::MAX_DEAD_TIME)
        .map(|d| {
            let pairs: Vec<(f64, f64, f64)> = (d..us.len())
                .filter_map(|k| Some((ys[k]?, us[k - d], ys[k + 1]?)))
                .collect();
            let fit = if integrating {
                ident::fit_integrating_pairs(&pairs)
            } else {
                ident::fit_pairs(&pairs)
            };
            (d, fit)
        })
        .collect();
    let best = fits
        .iter()
        .filter_map(|(_, f)| f.as_ref().ok().map(|m| m.r2))
        .fold(f64::NEG_INFINITY, f64::max);
    for (d, f) in &fits {
        match f {
            Ok(m) => println!(
                "dead time {d}: y(k+1) = {:.4} y(k) + {:.5} u(k-{d}) + {:.3}   R^2 {:.3}",
                m.a, m.b, m.c, m.r2
            ),
            Err(e) => println!("dead time {d}: {e}"),
        }
    }
    let (delay, m) = fits
        .into_iter()
        .find_map(|(d, f)| f.ok().filter(|m| m.r2 >= best - 0.02).map(|m| (d, m)))
        .with_context(|| {
            format!(
                "too few usable periods of {periods}{}",
                match kind {
                    LoopType::Delay | LoopType::Ratio => " (too few connections per period?)",
                    LoopType::Utilization => "",
                }
            )
        })?;
    let (y_is, u_is) = match &l {
        LoopConfig::Delay(d) => (
            format!("{} delay, ms", d.measure.name()),
            format!("the {}", drive.describe()),
        ),
        LoopConfig::Utilization(_) => (
            "CPU utilization, %".to_string(),
            format!("the output of the {}, 0 to 1", drive.describe()),
        ),
        LoopConfig::Ratio(r) => (
            format!(
                "the {} delay of port {} over that of port {}",
                r.measure.name(),
                r.port,
                r.relative_to
            ),
            format!("the {}", drive.describe()),
        ),
    };
    println!(
        "loop {name}: y(k+1) = {:.4} y(k) + {:.5} u(k-{delay}) + {:.3}   (y: {y_is}; u: {u_is}; dead time {delay} periods)",
        m.a,
        m.b,
        m.c,
    );
    println!(
        "fit: R^2 {:.3} over {} samples; residuals (the disturbance a period) {:.1} {unit}, one standard deviation",
        m.r2, m.samples, m.sigma
    );
    // One warning at most: an implausible model (refused without --force) says why; a
    // plausible but weak fit says so.
    match implausible(m.b, sign, m.r2, kind.quantity()) {
        Some(why) if write && !force => bail!(
            "loop {name}: the model is not written: {why}. Identify again (more periods, a wider range, steadier load), or write it with --force"
        ),
        Some(why) => println!("warning: {why}"),
        None if m.r2 < 0.5 => println!(
            "warning: the model explains little of the {} (R^2 < 0.5): more periods, a wider step, or steadier load",
            kind.quantity()
        ),
        None => {}
    }
    if write {
        let f = |v: f64| toml_edit::Value::from(format!("{v:.6e}").parse::<f64>().unwrap_or(v));
        config::write_items(
            config,
            name,
            true,
            &[
                ("a", f(m.a)),
                ("b", f(m.b)),
                ("c", f(m.c)),
                ("r2", f(m.r2)),
                ("sigma", f(m.sigma)),
                ("delay", toml_edit::Value::from(delay as i64)),
            ],
        )?;
        println!("written to [loop.model] of {}", config.display());
    }
    Ok(())
}

/// `qosmgr design --settling`: a number of periods, or the least spread.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Settling {
    Periods(f64),
    Auto,
}

/// The longest settling time, in periods, `--settling auto` tries.
const AUTO_LONGEST: f64 = 50.0;

fn parse_settling(s: &str) -> Result<Settling, String> {
    if s == "auto" {
        return Ok(Settling::Auto);
    }
    s.parse::<f64>()
        .map(Settling::Periods)
        .map_err(|_| format!("{s:?} is neither a number of periods nor \"auto\""))
}

fn design_cmd(
    config: &Path,
    name: &str,
    settling: Settling,
    overshoot: f64,
    write: bool,
) -> Result<()> {
    let cfg = Config::load(config)?;
    let l = cfg.find(name)?;
    let m = l.model().with_context(|| {
        format!("loop {name:?} has no model: run `qosmgr identify --write` first")
    })?;
    let dz = match settling {
        Settling::Periods(ks) => deadtime::design(m.a, m.b, m.delay, ks, overshoot)?,
        Settling::Auto => {
            let (dz, _) = noise::least_spread(m.a, m.b, m.delay, overshoot, AUTO_LONGEST)?;
            println!(
                "settling time with the least spread (worst of b halved, as modelled, doubled; 2 to {AUTO_LONGEST} periods): {} periods",
                dz.settling
            );
            dz
        }
    };
    let (g, p) = (dz.gains, dz.poles);
    println!(
        "loop {name}: model a {:.4} b {:.5} dead time {}; poles {:.4} e^(±j{:.4}) for {} periods, {:.0} % overshoot",
        m.a,
        m.b,
        m.delay,
        p.r,
        p.theta,
        dz.settling,
        overshoot * 100.0
    );
    if let Settling::Periods(ks) = settling {
        if dz.settling > ks {
            println!(
                "(the dead time allows no robust loop settling in {ks} periods: {} is the shortest)",
                dz.settling
            );
        }
    }
    println!("gains: kp {:.6} ki {:.6}", g.kp, g.ki);
    let rep = deadtime::check_robust(m.a, m.b, m.delay, g, 400);
    println!(
        "{:<8} {:>9} {:<7} {:>9} {:>10}",
        "b", "max|pole|", "stable", "settling", "overshoot"
    );
    for c in &rep.cases {
        println!(
            "{:<8} {:>9.4} {:<7} {:>9} {:>9.1}%",
            format!("{}b", c.b_factor),
            c.spectral_radius,
            c.stable,
            c.response
                .settling
                .map_or("never".into(), |s| s.to_string()),
            c.response.overshoot * 100.0
        );
    }
    if let Some((lo, hi)) = rep.b_range {
        println!("stable for b x {lo:.3} to {hi:.3}");
    }
    print_spread(&m, g, l.kind().unit());
    if !rep.robust() {
        bail!("the design is not stable for b halved and doubled: ask for a longer settling time");
    }
    if write {
        config::write_values(config, name, false, &[("kp", g.kp), ("ki", g.ki)])?;
        println!("written to loop {name:?} of {}", config.display());
    }
    Ok(())
}

/// The spread the design leaves on the measurement, per unit of disturbance and, if
/// identify measured the disturbance, in the measurement's `unit`.
fn print_spread(m: &config::ModelConfig, g: Gains, unit: &str) {
    let [half, nominal, double] = noise::B_FACTORS.map(|f| noise::spread(m.a, f * m.b, m.delay, g));
    // Per unit with two decimals, in ms with none (a percentage with one).
    let digits = if unit == "ms" { 0 } else { 1 };
    let show = |s: Option<f64>, unit: f64, digits: usize| {
        s.map_or("unbounded".into(), |s| format!("{:.digits$}", s * unit))
    };
    let line = |unit: f64, digits: usize| {
        format!(
            "{} ({} with b halved, {} doubled)",
            show(nominal, unit, digits),
            show(half, unit, digits),
            show(double, unit, digits)
        )
    };
    println!("spread per unit of disturbance: {}", line(1.0, 2));
    match m.sigma {
        Some(sigma) => println!(
            "disturbance {sigma:.1} {unit} a period (identify's residuals): the loop holds the measurement within +-{} {unit}, one standard deviation; no loop at this period holds it closer than +-{sigma:.1} {unit}",
            line(sigma, digits)
        ),
        None => println!("(the model has no disturbance: identify again to measure it)"),
    }
}

fn main() {
    openqos::version_flag("qosmgr", env!("CARGO_PKG_VERSION"));
    openqos::completions_flag::<Args>("qosmgr");
    let args = Args::parse();
    let r = match args.cmd {
        Cmd::Run {
            config,
            log,
            periods,
            check,
        } => run(&config, log.as_deref(), periods, check),
        Cmd::Status {
            status_file,
            config,
            json,
            watch,
            count,
        } => status(status_file, config, json, watch, count),
        Cmd::Identify {
            at,
            periods,
            low,
            high,
            relay,
            integrating,
            write,
            force,
        } => identify(
            &at.config,
            &at.name,
            periods,
            (low, high),
            if relay {
                Excitation::Relay
            } else {
                Excitation::Prbs
            },
            integrating,
            (write, force),
        ),
        Cmd::Design {
            at,
            settling,
            overshoot,
            write,
        } => design_cmd(&at.config, &at.name, settling, overshoot, write),
    };
    if let Err(e) = r {
        eprintln!("qosmgr: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_delay_is_littles_law() {
        // 12 waiting, 6 arrived in 2 s (3/s): 4 s each.
        assert_eq!(queue_delay_ms(12, 6, 2000.0), Some(4000.0));
        assert_eq!(queue_delay_ms(0, 6, 2000.0), Some(0.0));
        assert_eq!(queue_delay_ms(12, 0, 2000.0), None);
        let m = Measured {
            samples: 6,
            mean_ms: Some(1.0),
            queue_ms: Some(2.0),
            oldest_ms: 3.0,
            accept_gap_ms: Some(4.0),
        };
        assert_eq!(
            (
                m.value(Measure::Mean),
                m.value(Measure::Queue),
                m.value(Measure::Oldest)
            ),
            (Some(1.0), Some(2.0), Some(5.0))
        );
    }

    #[test]
    fn a_ratio_needs_both_delays_and_a_denominator() {
        assert_eq!(delay_ratio(Some(300.0), Some(600.0)), Some(0.5));
        assert_eq!(delay_ratio(Some(0.0), Some(600.0)), Some(0.0));
        // No connection waited on the second port: no ratio, the output holds.
        assert_eq!(delay_ratio(Some(300.0), Some(0.0)), None);
        assert_eq!(delay_ratio(None, Some(600.0)), None);
        assert_eq!(delay_ratio(Some(300.0), None), None);
    }

    #[test]
    fn settling_is_periods_or_auto() {
        assert_eq!(parse_settling("auto"), Ok(Settling::Auto));
        assert_eq!(parse_settling("7.5"), Ok(Settling::Periods(7.5)));
        assert!(parse_settling("fast").unwrap_err().contains("auto"));
    }

    #[test]
    fn only_the_estimates_need_min_samples() {
        let m = Measured {
            samples: 2,
            mean_ms: Some(1.0),
            queue_ms: Some(2.0),
            oldest_ms: 0.0,
            accept_gap_ms: Some(100.0),
        };
        // Two accepted connections are too few to average or to estimate a rate from;
        // the oldest connection's wait (none waits: 0) is read and used.
        assert_eq!(m.usable(Measure::Mean, 5), None);
        assert_eq!(m.usable(Measure::Queue, 5), None);
        assert_eq!(m.usable(Measure::Oldest, 5), Some(0.0));
        assert_eq!(m.usable(Measure::Mean, 2), Some(1.0));
    }

    #[test]
    fn the_queue_measure_takes_the_arrival_rate_of_the_window() {
        let t0 = Instant::now();
        let at = |k: u64, accepted: u64, waiting: u64, delay_ms: u64| Snap {
            accepted,
            delay_ns: delay_ms * 1_000_000,
            waiting,
            oldest_ns: waiting * 100_000_000,
            at: t0 + Duration::from_secs(k),
        };
        // Two periods of 1 s: 10 accepted, the queue grew from 10 to 14, so 14 arrived
        // (7/s) and the 14 waiting wait 2 s; the last period's 6 accepted waited 1.5 s.
        let old = at(0, 100, 10, 0);
        let prev = at(1, 104, 12, 4_000);
        let now = at(2, 110, 14, 13_000);
        let m = Measured::between(prev, old, now);
        assert_eq!(m.samples, 6);
        assert_eq!(m.mean_ms, Some(1500.0));
        assert!((m.queue_ms.unwrap() - 2000.0).abs() < 1e-9);
        // The head has waited 1.4 s; 10 accepted in 2 s, one every 200 ms: it will be
        // accepted with 1.5 s on average.
        assert_eq!(m.oldest_ms, 1400.0);
        assert_eq!(m.accept_gap_ms, Some(200.0));
        assert!((m.value(Measure::Oldest).unwrap() - 1500.0).abs() < 1e-9);
        // A queue that shrank by more than was accepted (connections reset while
        // waiting): nothing arrived, no estimate.
        let m = Measured::between(prev, at(0, 100, 30, 0), now);
        assert_eq!(m.queue_ms, None);
        // Nothing accepted in the period: no mean.
        assert_eq!(Measured::between(now, old, now).mean_ms, None);
        // A first reading (measure's stand-in for the missing past): only the wait.
        let first = Measured::between(now, now, now);
        assert_eq!(
            (
                first.samples,
                first.mean_ms,
                first.queue_ms,
                first.accept_gap_ms
            ),
            (0, None, None, None)
        );
        assert_eq!(first.oldest_ms, 1400.0);
    }

    #[test]
    fn the_sensor_keeps_its_window() {
        let t0 = Instant::now();
        let snap = |k: u64, accepted: u64| Snap {
            accepted,
            delay_ns: accepted * 1000,
            waiting: 0,
            oldest_ns: 0,
            at: t0 + Duration::from_secs(k),
        };
        let mut s = Sensor::new(3);
        assert!(s.push(snap(0, 0)).is_none());
        // Too young for the window: the oldest reading there is.
        let (prev, old) = s.push(snap(1, 10)).unwrap();
        assert_eq!((prev.accepted, old.accepted), (0, 0));
        s.push(snap(2, 25));
        let (prev, old) = s.push(snap(3, 30)).unwrap();
        assert_eq!((prev.accepted, old.accepted), (25, 0));
        // From now on exactly three periods back.
        let (prev, old) = s.push(snap(4, 42)).unwrap();
        assert_eq!((prev.accepted, old.accepted), (30, 10));
        assert_eq!(s.hist.len(), 4);
        // Counters that went back: the meter was made anew, everything is forgotten.
        assert!(s.push(snap(5, 3)).is_none());
        let (prev, old) = s.push(snap(6, 9)).unwrap();
        assert_eq!((prev.accepted, old.accepted), (3, 3));
        // A window of one period is the previous reading.
        let mut one = Sensor::new(0);
        one.push(snap(0, 0));
        one.push(snap(1, 5));
        let (prev, old) = one.push(snap(2, 8)).unwrap();
        assert_eq!((prev.accepted, old.accepted), (5, 5));
    }

    /// The test utilization loop, then a delay loop.
    fn both() -> String {
        format!(
            "{}{}",
            config::TEST_UTILIZATION,
            r#"
[[loop]]
name = "premium"
type = "delay"
port = 8080
set_point = "600ms"
group = 2
min = 1
max = 20
safe = 9
"#
        )
    }

    #[test]
    fn the_status_file_keeps_what_scripts_read() {
        let cfg = Config::parse(&both()).unwrap();
        let status = |l: &LoopConfig, values: &[u64]| {
            let drive = Drive::new(l).unwrap();
            LoopStatus::new(l, &drive, drive.output_for(values), values)
        };
        let mut cpu = status(&cfg.loops[0], &[10_000, 122]);
        cpu.measured = Some(31.5);
        let delay = status(&cfg.loops[1], &[9]);
        let st = Status {
            pid: 1,
            updated: now_s(),
            period_ms: 2000,
            lease_ms: 10_000,
            running: true,
            loops: vec![cpu, delay],
        };
        let text = serde_json::to_string_pretty(&st).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let (c, d) = (&v["loops"][0], &v["loops"][1]);
        // A utilization loop: percent, its output and every stage's value; no delay
        // fields.
        assert_eq!(
            (c["type"].as_str(), c["unit"].as_str()),
            (Some("utilization"), Some("%"))
        );
        assert_eq!(
            (c["set_point"].as_f64(), c["measured"].as_f64()),
            (Some(30.0), Some(31.5))
        );
        assert!((c["output"].as_f64().unwrap() - 0.7).abs() < 1e-12, "{c}");
        assert_eq!(c["actuators"][1]["actuator"], "rate of group 3");
        assert_eq!(c["actuators"][1]["value"], 122);
        assert!(
            c.get("set_point_ms").is_none() && c.get("port").is_none(),
            "{c}"
        );
        // A delay loop: ms, with the fields of before (30-qosmgr-failsafe reads
        // "set_point_ms": 700 from status -j).
        assert_eq!(
            (d["type"].as_str(), d["unit"].as_str()),
            (Some("delay"), Some("ms"))
        );
        assert!(text.contains("\"set_point_ms\": 600"), "{text}");
        assert!(text.contains("\"name\": \"premium\""), "{text}");
        assert_eq!(
            (d["port"].as_u64(), d["samples"].as_u64()),
            (Some(8080), Some(0))
        );
        assert_eq!(d["output"].as_f64(), Some(9.0));
        // It reads back, each loop with what it has.
        let back: Status = serde_json::from_str(&text).unwrap();
        assert!(back.loops[0].delay.is_none());
        assert_eq!(back.loops[1].delay.as_ref().unwrap().port, 8080);
        // And status shows it, table and JSON.
        let dir = std::env::temp_dir().join(format!("qosmgr-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("status.json");
        std::fs::write(&p, &text).unwrap();
        status_once(&p, false, false).unwrap();
        status_once(&p, true, true).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn identification_levels() {
        let cfg = Config::parse(&both()).unwrap();
        let (cpu, delay) = (&cfg.loops[0], &cfg.loops[1]);
        // A utilization loop steps its output by 0.2 around where it is, within 0..=1.
        let around = |current: f64| identify_levels(cpu, (None, None), current).unwrap();
        let (lo, hi) = around(0.5);
        assert!(
            (lo - 0.4).abs() < 1e-12 && (hi - 0.6).abs() < 1e-12,
            "{lo} {hi}"
        );
        assert_eq!(around(0.0), (0.0, 0.2));
        let (lo, hi) = around(0.97);
        assert!((lo - 0.8).abs() < 1e-12 && hi == 1.0, "{lo} {hi}");
        assert_eq!(
            identify_levels(cpu, (Some(0.9), None), 0.0).unwrap(),
            (0.9, 1.0)
        );
        let e =
            |l: &LoopConfig, levels| format!("{:#}", identify_levels(l, levels, 0.5).unwrap_err());
        assert!(e(cpu, (Some(0.5), Some(1.5))).contains("0 <= low < high <= 1"));
        assert!(e(cpu, (Some(0.5), Some(0.5))).contains("0 <= low < high <= 1"));
        assert!(e(cpu, (Some(f64::NAN), None)).contains("0 <= low < high <= 1"));
        // A delay loop's are rates, a quarter and three quarters of min..=max by default.
        assert_eq!(
            identify_levels(delay, (None, None), f64::NAN).unwrap(),
            (5.0, 16.0)
        );
        assert!(e(delay, (Some(2.5), Some(7.0))).contains("whole numbers"));
        assert!(e(delay, (Some(0.0), Some(7.0)))
            .contains("min <= low < high <= max (1 <= 0 < 7 <= 20)"));
    }

    #[test]
    fn design_writes_negative_gains_for_a_utilization_loop() {
        let dir = std::env::temp_dir().join(format!("qosmgr-design-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("q.toml");
        std::fs::write(&p, both()).unwrap();
        let e = format!(
            "{:#}",
            design_cmd(&p, "web-cpu", Settling::Periods(10.0), 0.1, true).unwrap_err()
        );
        assert!(e.contains("no model"), "{e}");
        // CPU falls 36 points as the output goes from 0 to 1 (a static plant sampled
        // every 2 s, a = 0.2).
        config::write_values(
            &p,
            "web-cpu",
            true,
            &[("a", 0.2), ("b", -36.0), ("sigma", 1.5)],
        )
        .unwrap();
        design_cmd(&p, "web-cpu", Settling::Periods(8.0), 0.1, true).unwrap();
        let cfg = Config::load(&p).unwrap();
        let pi = cfg.loops[0].pi().unwrap();
        assert!(pi.ki < 0.0, "{pi:?}");
        assert_eq!((pi.min, pi.max), (0.0, 1.0));
        let want = deadtime::design(0.2, -36.0, 0, 8.0, 0.1).unwrap().gains;
        assert!(
            (pi.kp - want.kp).abs() <= 1e-5 * want.kp.abs(),
            "{pi:?} {want:?}"
        );
        assert!(
            (pi.ki - want.ki).abs() <= 1e-5 * want.ki.abs(),
            "{pi:?} {want:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
