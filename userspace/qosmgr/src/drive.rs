// SPDX-License-Identifier: GPL-2.0

//! How a loop's controller output reaches its actuators.
//!
//! A `delay` loop's output is its one actuator's value (a rate, a weight), within
//! `min..=max`. A `utilization` loop's output `v` runs from 0 to 1 and drives its stages
//! through a [`SplitRange`]: the first stage goes from its `from` to its `to` before
//! the second starts, and they come back in reverse order. Either way each actuator
//! takes whole values, applied with error diffusion ([`Quantizer`]) so that they
//! average to what the controller asked for. Going back, [`Drive::output_for`] finds
//! the output that gives the actuators' current values (or comes nearest), so that a
//! loop starts, and resumes after a failure, without a bump.
//!
//! Everything here is arithmetic: reading and setting the kernel's actuators is the
//! caller's.

use crate::config::{Actuator, LoopConfig};
use anyhow::{Context, Result};
use openqos_control::{
    quant::Quantizer,
    split::{SplitRange, Stage},
};

/// A rate limit this much above what its group admitted (plus one connection a second)
/// is taken to be out of the clients' way: it admits them all.
pub const DEAD_MARGIN: f64 = 1.1;

/// One actuator of a loop: its range and its safe value.
#[derive(Clone, Debug)]
pub struct Output {
    /// What it sets.
    pub act: Actuator,
    /// Its value at the start of its range (a delay loop's `min`, a stage's `from`).
    pub from: u64,
    /// Its value at the end (`max`, a stage's `to`).
    pub to: u64,
    /// Its value on exit and on failure.
    pub safe: u64,
    quant: Quantizer,
}

impl Output {
    /// The lowest and highest value it takes.
    pub fn bounds(&self) -> (u64, u64) {
        (self.from.min(self.to), self.from.max(self.to))
    }
}

/// A loop's actuators and how its output maps onto them.
#[derive(Clone, Debug)]
pub struct Drive {
    /// `None`: one actuator, set to the output itself.
    split: Option<SplitRange>,
    outputs: Vec<Output>,
}

impl Drive {
    /// The actuators of loop `l` (checked by [`crate::config::Config::check`]).
    pub fn new(l: &LoopConfig) -> Result<Self> {
        let acts = l.actuators()?;
        let output = |act, from, to, safe| Output {
            act,
            from,
            to,
            safe,
            quant: Quantizer::new(),
        };
        Ok(match l {
            LoopConfig::Delay(d) => Self {
                split: None,
                outputs: vec![output(acts[0], d.min, d.max, d.safe)],
            },
            LoopConfig::Ratio(r) => Self {
                split: None,
                outputs: vec![output(acts[0], r.min, r.max, r.safe)],
            },
            LoopConfig::Utilization(u) => {
                let split = SplitRange::new(
                    u.stages
                        .iter()
                        .map(|s| Stage {
                            from: s.from as f64,
                            to: s.to as f64,
                        })
                        .collect(),
                )
                .with_context(|| format!("loop {:?}", u.name))?;
                Self {
                    split: Some(split),
                    outputs: u
                        .stages
                        .iter()
                        .zip(acts)
                        .map(|(s, act)| output(act, s.from, s.to, s.safe))
                        .collect(),
                }
            }
        })
    }

    /// The actuators, in order.
    pub fn outputs(&self) -> &[Output] {
        &self.outputs
    }

    /// Whether the output drives its actuators through a split range.
    pub fn is_split(&self) -> bool {
        self.split.is_some()
    }

    /// The actuators' values, unrounded, for output `u`.
    pub fn values(&self, u: f64) -> Vec<f64> {
        match &self.split {
            Some(s) => s.apply(u),
            None => vec![u],
        }
    }

    /// The whole values to set for output `u`, one per actuator: [`Drive::values`]
    /// with each actuator's unapplied fraction carried into the next period.
    pub fn quantize(&mut self, u: f64) -> Vec<u64> {
        let values = self.values(u);
        self.outputs
            .iter_mut()
            .zip(values)
            .map(|(o, v)| {
                let (lo, hi) = o.bounds();
                o.quant.apply(v, lo, hi)
            })
            .collect()
    }

    /// Forgets the carried fractions (the actuators were set from outside).
    pub fn reset(&mut self) {
        for o in &mut self.outputs {
            o.quant.reset();
        }
    }

    /// The safe values, one per actuator.
    pub fn safe_values(&self) -> Vec<u64> {
        self.outputs.iter().map(|o| o.safe).collect()
    }

    /// The output that gives the actuators' values `current` (one per actuator), or
    /// the nearest one a split range can give (see [`SplitRange::invert`]): the
    /// controller starts from it, bumplessly. A single actuator's output is its value
    /// (the controller clamps it to its limits).
    pub fn output_for(&self, current: &[u64]) -> f64 {
        let values: Vec<f64> = current.iter().map(|&v| v as f64).collect();
        match &self.split {
            // The lengths agree (one value per actuator); if not, the start.
            Some(s) => s.invert(&values).unwrap_or(0.0),
            None => values.first().copied().unwrap_or(f64::NAN),
        }
    }

    /// Where a split range's output `u` continues from at the start of a period, given
    /// what each accept-rate stage's group admitted in the last one (`admitted[i]`,
    /// connections/s; `None` for other stages or when unknown), the controller's
    /// integral gain `ki` and the period's error (set point minus measurement): a rate
    /// limit above [`DEAD_MARGIN`] times the admitted rate (plus 1/s) admits every
    /// client, so that part of its stage is a dead zone, which the output skips in the
    /// direction it is about to move ([`SplitRange::skip_dead`]) instead of integrating
    /// through it. `None` if it is not in one (or the drive is a single actuator);
    /// else the stage (0-based) and the output to continue from.
    pub fn skip_dead_zones(
        &self,
        u: f64,
        admitted: &[Option<f64>],
        ki: f64,
        error: f64,
    ) -> Option<(usize, f64)> {
        let split = self.split.as_ref()?;
        let raise = ki * error > 0.0;
        admitted.iter().enumerate().find_map(|(i, a)| {
            let edge = (*a)? * DEAD_MARGIN + 1.0;
            let to = split.skip_dead(u, i, edge, raise);
            (to != u).then_some((i, to))
        })
    }

    /// What the loop drives, in words.
    pub fn describe(&self) -> String {
        match &self.split {
            None => self.outputs[0].act.to_string(),
            Some(_) => format!(
                "split range: {}",
                self.outputs
                    .iter()
                    .map(|o| o.act.to_string())
                    .collect::<Vec<_>>()
                    .join(", then ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, TEST_UTILIZATION};
    use openqos_control::{
        design,
        pi::{Pi, Saturation},
    };

    /// A split range's controller with gains `g`: output 0 to 1, no slew limit, no
    /// deadband.
    fn split_pi(g: &design::Gains) -> openqos_control::pi::PiConfig {
        openqos_control::pi::PiConfig {
            kp: g.kp,
            ki: g.ki,
            min: 0.0,
            max: 1.0,
            slew: f64::INFINITY,
            deadband: 0.0,
        }
    }

    fn cpu_drive() -> Drive {
        let c = Config::parse(TEST_UTILIZATION).unwrap();
        Drive::new(&c.loops[0]).unwrap()
    }

    #[test]
    fn a_split_drive_maps_and_inverts() {
        let mut d = cpu_drive();
        assert!(d.is_split());
        assert_eq!(
            d.describe(),
            "split range: weight of condition 1 of rule 80, then rate of group 3"
        );
        assert_eq!(d.safe_values(), vec![1, 200]);
        assert_eq!(d.quantize(0.0), vec![1, 200]);
        // A weight of 5000.5: 5000 and 5001 in turn.
        let half: Vec<u64> = (0..2).map(|_| d.quantize(0.25)[0]).collect();
        assert_eq!(
            (half.iter().sum::<u64>(), d.quantize(0.25)[1]),
            (10001, 200)
        );
        assert_eq!(d.quantize(0.5), vec![10000, 200]);
        assert_eq!(d.quantize(1.0), vec![10000, 5]);
        // A rate of 102.5/s: 102 and 103 in turn.
        let rates: Vec<u64> = (0..4).map(|_| d.quantize(0.75)[1]).collect();
        assert_eq!(rates.iter().sum::<u64>(), 410, "{rates:?}");
        // Bumpless: the output that gives the values read.
        assert_eq!(d.output_for(&[1, 200]), 0.0);
        assert!((d.output_for(&[2500, 200]) - 0.5 * 2499.0 / 9999.0).abs() < 1e-12);
        assert_eq!(d.output_for(&[10000, 5]), 1.0);
        assert!((d.output_for(&[10000, 122]) - 0.7).abs() < 1e-12);
        // A rate above the stage's start reads as the start.
        assert!((d.output_for(&[3000, 1000]) - 0.5 * 2999.0 / 9999.0).abs() < 1e-12);
        d.reset();
        assert_eq!(d.quantize(0.75)[1], 103);
    }

    #[test]
    fn a_delay_drive_is_its_actuator() {
        let c = Config::parse(
            r#"
[[loop]]
name = "premium"
type = "delay"
port = 8080
set_point = "200ms"
group = 2
min = 2
max = 200
safe = 150
"#,
        )
        .unwrap();
        let mut d = Drive::new(&c.loops[0]).unwrap();
        assert!(!d.is_split());
        assert_eq!(d.describe(), "rate of group 2");
        assert_eq!(d.values(17.5), vec![17.5]);
        assert_eq!(d.quantize(1.0), vec![2]);
        assert_eq!(d.quantize(500.0), vec![200]);
        assert_eq!(d.output_for(&[42]), 42.0);
        assert_eq!(d.safe_values(), vec![150]);
    }

    /// The utilization loop of the paper's Figure 10 in simulation: a first-order
    /// plant whose CPU use falls as clients go to degraded content (stage 1: the
    /// share, 0 to 10000) and then as fewer of them are admitted (stage 2: the
    /// degraded instance's rate, 200 to 5/s), under a load that grows and falls.
    #[test]
    fn a_utilization_loop_settles_in_stage_order_without_windup() {
        let mut drive = cpu_drive();
        // y(k+1) = a y(k) + (1 - a) (load(k) - 30 share - 30 (200 - rate) / 195): each
        // stage can take 30 points off. Per unit of v (each stage spans half of it):
        // b = -(1 - a) 60, the model the loop is designed with.
        let a = 0.4;
        let b = -(1.0 - a) * 60.0;
        let (g, _) = design::pi_gains(a, b, 8.0, 0.1).unwrap();
        assert!(g.ki < 0.0);
        let cfg = split_pi(&g);
        let set_point = 30.0;
        let cpu = |load: f64, values: &[u64]| {
            load - 30.0 * values[0] as f64 / 10_000.0 - 30.0 * (200.0 - values[1] as f64) / 195.0
        };
        // Load (CPU % with nothing degraded): 45, then 75 (stage 1 saturates, stage 2
        // takes the rest), then 110 (beyond both: the output saturates at 1), then 45
        // again.
        let load = |k: usize| match k {
            0..60 => 45.0,
            60..120 => 75.0,
            120..180 => 110.0,
            _ => 45.0,
        };
        let mut pi = Pi::new(cfg, drive.output_for(&[0, 200])).unwrap();
        let mut y = 45.0;
        let mut log = Vec::new();
        for k in 0..260 {
            let s = pi.step(set_point, y);
            let values = drive.quantize(s.output);
            // Stage order, whatever the output: the rate below its start only with
            // everything sent to degraded content.
            assert!(values[1] == 200 || values[0] == 10_000, "{k}: {values:?}");
            log.push((k, y, s.output, s.saturation, values.clone()));
            y = a * y + (1.0 - a) * cpu(load(k), &values);
        }
        let at = |k: usize| &log[k];
        // Settled at the set point in each phase that can reach it, with the stages
        // where the load puts them: half the share at 45 %, all of it and two thirds of
        // the rate range at 75 %.
        let (_, y1, v1, _, x1) = at(59);
        assert!((y1 - set_point).abs() < 0.3, "{y1}");
        assert!((v1 - 0.25).abs() < 0.01, "{v1}");
        assert!(
            (x1[0] as f64 - 5000.0).abs() < 100.0 && x1[1] == 200,
            "{x1:?}"
        );
        let (_, y2, v2, _, x2) = at(119);
        assert!((y2 - set_point).abs() < 0.3, "{y2}");
        assert!((v2 - (0.5 + 0.5 * 15.0 / 30.0)).abs() < 0.01, "{v2}");
        assert_eq!(x2[0], 10_000);
        assert!((x2[1] as f64 - 102.5).abs() < 2.0, "{x2:?}");
        // The load step up: stage 1 reaches its end before stage 2 moves.
        let s1_full = (60..120).find(|&k| at(k).4[0] == 10_000).unwrap();
        let s2_moves = (60..120).find(|&k| at(k).4[1] < 200).unwrap();
        assert!(s1_full <= s2_moves, "{s1_full} {s2_moves}");
        // Beyond both stages: the output saturates at 1, the stages at their ends.
        let (_, y3, v3, sat3, x3) = at(179);
        assert!(*y3 > 40.0, "{y3}");
        assert_eq!(
            (*v3, *sat3, x3.as_slice()),
            (1.0, Saturation::Max, &[10_000, 5][..])
        );
        // No windup: 60 periods at the limit, and the output leaves it within two
        // periods of the load falling.
        let left = (180..260).find(|&k| at(k).2 < 1.0).unwrap();
        assert!(left <= 182, "left saturation at {left}");
        // Back in reverse order: the rate is back at its start before the share falls.
        let s2_back = (180..260).find(|&k| at(k).4[1] == 200).unwrap();
        let s1_falls = (180..260).find(|&k| at(k).4[0] < 10_000).unwrap();
        assert!(s2_back <= s1_falls, "{s2_back} {s1_falls}");
        let (_, y4, v4, _, x4) = at(259);
        assert!((y4 - set_point).abs() < 0.3, "{y4}");
        assert!((v4 - 0.25).abs() < 0.01, "{v4}");
        assert_eq!(x4[1], 200);
    }

    /// Figure 10's plant with the rate stage's dead zone, at fig10's numbers: clients
    /// arrive at `lambda`/s, a share goes to degraded content, and the degraded
    /// instance admits at most its rate limit (stage 2: 54/s down to 1/s), so a limit
    /// above the degraded arrivals does nothing. After the load falls from where stage 2
    /// was needed (a limit of about 38/s at 48/s), the output must cross the part of
    /// stage 2 from 38/s to 54/s, which does nothing at 24/s, before the share moves:
    /// by integration that takes periods at a too-low utilization (fig10's run 5: 4
    /// periods at 20 %); skipping it ([`Drive::skip_dead_zones`]) takes none.
    #[test]
    fn the_rate_stages_dead_zone_is_skipped_after_the_load_falls() {
        let text = TEST_UTILIZATION.replace(
            "{ group = 3, from = 200, to = 5, safe = 200 }",
            "{ group = 3, from = 54, to = 1, safe = 54 }",
        );
        assert_ne!(text, TEST_UTILIZATION);
        let c = Config::parse(&text).unwrap();
        // CPU %: 2 % a full request a second, 0.8 % a degraded one, first order.
        let a = 0.3;
        let cpu = |lambda: f64, values: &[u64]| {
            let share = values[0] as f64 / 10_000.0;
            let degraded = (lambda * share).min(values[1] as f64);
            (2.0 * lambda * (1.0 - share) + 0.8 * degraded, degraded)
        };
        // Designed for stage 1 at 24/s: b = -(1 - a) 1.2 24 per half of v (stage 2's
        // is -(1 - a) 0.8 106, 1.5 times as much: within the design's robustness).
        let b = -(1.0 - a) * 1.2 * 24.0 * 2.0;
        let (g, _) = design::pi_gains(a, b, 5.0, 0.0).unwrap();
        let cfg = split_pi(&g);
        let run = |skip: bool| {
            let mut drive = Drive::new(&c.loops[0]).unwrap();
            let mut pi = Pi::new(cfg, drive.output_for(&[1, 54])).unwrap();
            let (mut y, mut admitted) = (48.0, None);
            let mut ys = Vec::new();
            for k in 0..150 {
                // 24/s, then 48/s (all degraded is 38 %: stage 2 needed), then 24/s.
                let lambda = if (50..100).contains(&k) { 48.0 } else { 24.0 };
                if skip {
                    let rates = [None, admitted];
                    if let Some((_, to)) =
                        drive.skip_dead_zones(pi.output(), &rates, cfg.ki, 30.0 - y)
                    {
                        pi.reset_output(to);
                    }
                }
                let s = pi.step(30.0, y);
                let values = drive.quantize(s.output);
                let (target, deg) = cpu(lambda, &values);
                y = a * y + (1.0 - a) * target;
                admitted = Some(deg);
                ys.push(y);
            }
            ys
        };
        let (plain, skipping) = (run(false), run(true));
        let out = |ys: &[f64], from: usize| {
            ys[from..from + 30]
                .iter()
                .filter(|y| (**y - 30.0).abs() > 3.0)
                .count()
        };
        // Both hold 30 % at 48/s, in stage 2, and at 24/s in the end.
        for ys in [&plain, &skipping] {
            assert!((ys[99] - 30.0).abs() < 0.5, "{:?}", &ys[50..100]);
            assert!((ys[149] - 30.0).abs() < 0.5, "{:?}", &ys[100..150]);
        }
        // After the fall: integrating through the dead zone leaves the utilization out
        // of the band for longer than skipping it.
        let (p, s) = (out(&plain, 100), out(&skipping, 100));
        assert!(s < p, "skipping {s} periods out, integrating {p}");
        eprintln!("out of the band after the fall: skipping {s} periods, integrating {p}");
    }
}
