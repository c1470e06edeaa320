// SPDX-License-Identifier: GPL-2.0

//! The loops' state in the Prometheus text exposition format (0.0.4), served on
//! `/metrics` at the configuration's `metrics_listen` address while `qosmgr run` runs
//! (off by default). The text is rendered once a period by the loop thread; a server
//! thread (`tiny_http`) answers every request with the latest one.

use anyhow::{Context, Result};
use std::fmt::Write;
use std::sync::{Arc, Mutex};

/// What a period exports of one loop.
pub struct LoopSample<'a> {
    pub name: &'a str,
    pub actuator: &'a str,
    pub state: &'a str,
    pub set_point_ms: f64,
    pub measured_ms: Option<f64>,
    pub samples: u64,
    pub output: f64,
}

/// The text of one period: the manager's own state and every loop's.
pub fn render(period_s: f64, lease_s: f64, periods: u64, loops: &[LoopSample<'_>]) -> String {
    let mut o = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
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
    let per = |f: &dyn Fn(&LoopSample<'_>) -> Option<f64>| -> Vec<(String, f64)> {
        loops
            .iter()
            .filter_map(|l| f(l).map(|v| (format!("{{loop=\"{}\"}}", esc(l.name)), v)))
            .collect()
    };
    family(
        "qosmgr_loop_set_point_seconds",
        "gauge",
        "The mean connection delay a loop holds its port at.",
        &per(&|l| Some(l.set_point_ms / 1e3)),
    );
    family(
        "qosmgr_loop_delay_seconds",
        "gauge",
        "The mean connection delay a loop measured in the last period (absent: too few connections).",
        &per(&|l| l.measured_ms.map(|m| m / 1e3)),
    );
    family(
        "qosmgr_loop_samples",
        "gauge",
        "Connections a loop measured in the last period.",
        &per(&|l| Some(l.samples as f64)),
    );
    let outputs: Vec<(String, f64)> = loops
        .iter()
        .map(|l| {
            (
                format!(
                    "{{loop=\"{}\",actuator=\"{}\"}}",
                    esc(l.name),
                    esc(l.actuator)
                ),
                l.output,
            )
        })
        .collect();
    family(
        "qosmgr_loop_output",
        "gauge",
        "What a loop sets its actuator to (a rate per second, or a weight).",
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
        "1 for the state a loop is in (run, hold: too few connections, released: its actuator back at its safe value).",
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
                    actuator: "group 5",
                    state: "run",
                    set_point_ms: 600.0,
                    measured_ms: Some(612.5),
                    samples: 9,
                    output: 4.5,
                },
                LoopSample {
                    name: "we\"ird",
                    actuator: "rule 80 condition 1",
                    state: "hold",
                    set_point_ms: 200.0,
                    measured_ms: None,
                    samples: 1,
                    output: 3000.0,
                },
            ],
        )
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

    /// The reference parser (Debian's python3-prometheus-client) reads it back.
    #[test]
    fn the_reference_parser_reads_it() {
        let text = sample();
        let checks = r#"assert fams["qosmgr_periods"].type == "counter", fams
names = {s.labels["loop"] for s in fams["qosmgr_loop_output"].samples}
assert names == {"premium", 'we"ird'}, names"#;
        let n = openqos::prometheus_reference_check(&text, checks)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(n, text.lines().filter(|l| l.starts_with("# TYPE")).count());
    }
}
