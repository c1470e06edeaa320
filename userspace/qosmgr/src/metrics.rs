// SPDX-License-Identifier: GPL-2.0

//! The loops' state in the Prometheus text exposition format (0.0.4), served on
//! `/metrics` at the configuration's `metrics_listen` address while `qosmgr run` runs
//! (off by default). The text is rendered once a period by the loop thread; a server
//! thread (`tiny_http`) answers every request with the latest one.

use crate::config::LoopType;
use anyhow::{Context, Result};
use std::fmt::Write;
use std::sync::{Arc, Mutex};

/// What a period exports of one loop.
pub struct LoopSample<'a> {
    pub name: &'a str,
    /// Its type: a delay loop's set point and measurement are in ms, a utilization
    /// loop's in percent.
    pub kind: LoopType,
    pub state: &'a str,
    pub set_point: f64,
    pub measured: Option<f64>,
    /// Connections measured (delay loops).
    pub samples: Option<u64>,
    /// The controller's output.
    pub output: f64,
    /// Every actuator and what the loop sets it to, in order.
    pub actuators: Vec<(String, f64)>,
}

/// The text of one period: the manager's own state and every loop's.
pub fn render(period_s: f64, lease_s: f64, periods: u64, loops: &[LoopSample<'_>]) -> String {
    let mut o = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        // A family no loop has (no delay loop, say) is left out.
        if samples.is_empty() {
            return;
        }
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(o, "{name}{labels} {v}");
        }
    };
    let one = |v: f64| vec![(String::new(), v)];
    family(
        "qosmgr_period_seconds",
        "gauge",
        "The loops' period.",
        &one(period_s),
    );
    family(
        "qosmgr_lease_seconds",
        "gauge",
        "How long a limit the manager set holds without renewal.",
        &one(lease_s),
    );
    family(
        "qosmgr_periods_total",
        "counter",
        "Periods the manager has run.",
        &one(periods as f64),
    );
    // The loops of one type, each with its value (if it has one).
    let per = |kind: LoopType, f: &dyn Fn(&LoopSample<'_>) -> Option<f64>| {
        loops
            .iter()
            .filter(|l| l.kind == kind)
            .filter_map(|l| f(l).map(|v| (format!("{{loop=\"{}\"}}", esc(l.name)), v)))
            .collect::<Vec<(String, f64)>>()
    };
    let (delay, cpu, ratio) = (LoopType::Delay, LoopType::Utilization, LoopType::Ratio);
    family(
        "qosmgr_loop_set_point_seconds",
        "gauge",
        "The mean connection delay a delay loop holds its port at.",
        &per(delay, &|l| Some(l.set_point / 1e3)),
    );
    family(
        "qosmgr_loop_delay_seconds",
        "gauge",
        "The mean connection delay a delay loop measured in the last period (absent: too few connections).",
        &per(delay, &|l| l.measured.map(|m| m / 1e3)),
    );
    family(
        "qosmgr_loop_samples",
        "gauge",
        "Connections a delay loop measured in the last period.",
        &per(delay, &|l| l.samples.map(|n| n as f64)),
    );
    family(
        "qosmgr_loop_utilization_set_point_ratio",
        "gauge",
        "The CPU utilization (0 to 1 of the loop's CPUs) a utilization loop holds its cgroups at.",
        &per(cpu, &|l| Some(l.set_point / 100.0)),
    );
    family(
        "qosmgr_loop_utilization_ratio",
        "gauge",
        "The CPU utilization (0 to 1 of the loop's CPUs) a utilization loop measured in the last period (absent: no measurement yet).",
        &per(cpu, &|l| l.measured.map(|m| m / 100.0)),
    );
    family(
        "qosmgr_loop_delay_ratio_set_point",
        "gauge",
        "The ratio of two ports' mean connection delays a ratio loop holds.",
        &per(ratio, &|l| Some(l.set_point)),
    );
    family(
        "qosmgr_loop_delay_ratio",
        "gauge",
        "The ratio of two ports' connection delays a ratio loop measured in the last period (absent: too few connections, or no delay on the second port).",
        &per(ratio, &|l| l.measured),
    );
    family(
        "qosmgr_loop_split_output",
        "gauge",
        "A utilization loop's controller output, 0 to 1 across its split range's stages.",
        &per(cpu, &|l| Some(l.output)),
    );
    let outputs: Vec<(String, f64)> = loops
        .iter()
        .flat_map(|l| {
            l.actuators.iter().map(|(a, v)| {
                (
                    format!("{{loop=\"{}\",actuator=\"{}\"}}", esc(l.name), esc(a)),
                    *v,
                )
            })
        })
        .collect();
    family(
        "qosmgr_loop_output",
        "gauge",
        "What a loop sets each of its actuators to (a rate per second, or a weight).",
        &outputs,
    );
    let mut states = Vec::new();
    for l in loops {
        for s in ["run", "hold", "released"] {
            states.push((
                format!("{{loop=\"{}\",state=\"{s}\"}}", esc(l.name)),
                f64::from(u8::from(l.state == s)),
            ));
        }
    }
    family(
        "qosmgr_loop_state",
        "gauge",
        "1 for the state a loop is in (run, hold: nothing to act on this period, released: its actuators back at their safe values).",
        &states,
    );
    o
}

/// A label value with `\`, `"` and newlines escaped, as the format requires.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The endpoint: the latest text, served by a thread on `addr`.
pub struct Endpoint {
    text: Arc<Mutex<String>>,
}

impl Endpoint {
    /// Listens on `addr` and serves `/metrics` (404 for anything else) from a thread of
    /// its own, which lives as long as the process.
    pub fn start(addr: &str) -> Result<Self> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("metrics_listen: cannot listen on {addr}"))?;
        let text = Arc::new(Mutex::new(String::new()));
        let shared = text.clone();
        std::thread::spawn(move || {
            let ctype = tiny_http::Header::from_bytes(
                &b"Content-Type"[..],
                &b"text/plain; version=0.0.4; charset=utf-8"[..],
            )
            .ok();
            for req in server.incoming_requests() {
                let resp = if req.url() == "/metrics" {
                    let body = shared.lock().map(|t| t.clone()).unwrap_or_default();
                    let mut r = tiny_http::Response::from_string(body);
                    if let Some(h) = ctype.clone() {
                        r.add_header(h);
                    }
                    r
                } else {
                    tiny_http::Response::from_string("not found\n").with_status_code(404)
                };
                // A client that went away is not the manager's problem.
                let _ = req.respond(resp);
            }
        });
        Ok(Self { text })
    }

    /// Publishes a period's text.
    pub fn publish(&self, text: String) {
        if let Ok(mut t) = self.text.lock() {
            *t = text;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        render(
            2.0,
            6.0,
            17,
            &[
                LoopSample {
                    name: "premium",
                    kind: LoopType::Delay,
                    state: "run",
                    set_point: 600.0,
                    measured: Some(612.5),
                    samples: Some(9),
                    output: 4.5,
                    actuators: vec![("group 5".into(), 4.5)],
                },
                LoopSample {
                    name: "we\"ird",
                    kind: LoopType::Delay,
                    state: "hold",
                    set_point: 200.0,
                    measured: None,
                    samples: Some(1),
                    output: 3000.0,
                    actuators: vec![("rule 80 condition 1".into(), 3000.0)],
                },
                LoopSample {
                    name: "web-cpu",
                    kind: LoopType::Utilization,
                    state: "run",
                    set_point: 30.0,
                    measured: Some(31.5),
                    samples: None,
                    output: 0.75,
                    actuators: vec![
                        ("weight of condition 1 of rule 80".into(), 10000.0),
                        ("rate of group 3".into(), 102.5),
                    ],
                },
                LoopSample {
                    name: "gold",
                    kind: LoopType::Ratio,
                    state: "run",
                    set_point: 0.5,
                    measured: Some(0.55),
                    samples: Some(7),
                    output: 6.0,
                    actuators: vec![("weight of port 8080 in group 4".into(), 6.0)],
                },
            ],
        )
    }

    #[test]
    fn a_ratio_loop_has_its_own_families() {
        let t = sample();
        assert!(t.contains("qosmgr_loop_delay_ratio_set_point{loop=\"gold\"} 0.5"));
        assert!(t.contains("qosmgr_loop_delay_ratio{loop=\"gold\"} 0.55"));
        assert!(!t.contains("qosmgr_loop_delay_seconds{loop=\"gold\"}"));
    }

    #[test]
    fn states_are_one_hot() {
        let t = sample();
        assert!(t.contains("qosmgr_loop_state{loop=\"premium\",state=\"run\"} 1"));
        assert!(t.contains("qosmgr_loop_state{loop=\"premium\",state=\"hold\"} 0"));
        assert!(t.contains("qosmgr_loop_delay_seconds{loop=\"premium\"} 0.6125"));
        // No measurement, no sample (rather than a made-up value).
        assert!(
            !t.contains("qosmgr_loop_delay_seconds{loop=\"we\\\"ird\"}"),
            "{t}"
        );
    }

    #[test]
    fn utilization_loops_in_their_own_units() {
        let t = sample();
        assert!(t.contains("qosmgr_loop_utilization_set_point_ratio{loop=\"web-cpu\"} 0.3\n"));
        assert!(t.contains("qosmgr_loop_utilization_ratio{loop=\"web-cpu\"} 0.315\n"));
        assert!(t.contains("qosmgr_loop_split_output{loop=\"web-cpu\"} 0.75\n"));
        assert!(
            t.contains("qosmgr_loop_output{loop=\"web-cpu\",actuator=\"rate of group 3\"} 102.5\n")
        );
        assert!(t.contains("qosmgr_loop_state{loop=\"web-cpu\",state=\"run\"} 1"));
        // Not as a delay, nor with samples.
        assert!(!t.contains("seconds{loop=\"web-cpu\"}"), "{t}");
        assert!(!t.contains("samples{loop=\"web-cpu\"}"), "{t}");
        // Without delay loops, no delay families at all.
        let only = render(1.0, 5.0, 1, &[]);
        assert!(!only.contains("qosmgr_loop_delay_seconds"), "{only}");
        assert!(only.contains("qosmgr_periods_total 1"), "{only}");
    }

    /// The reference parser (Debian's python3-prometheus-client) reads it back.
    #[test]
    fn the_reference_parser_reads_it() {
        let text = sample();
        let checks = r#"assert fams["qosmgr_periods"].type == "counter", fams
names = {s.labels["loop"] for s in fams["qosmgr_loop_output"].samples}
assert names == {"premium", 'we"ird', "web-cpu", "gold"}, names
assert fams["qosmgr_loop_utilization_ratio"].samples[0].value == 0.315
assert fams["qosmgr_loop_delay_ratio"].samples[0].value == 0.55"#;
        let n = openqos::prometheus_reference_check(&text, checks)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(n, text.lines().filter(|l| l.starts_with("# TYPE")).count());
    }
}
