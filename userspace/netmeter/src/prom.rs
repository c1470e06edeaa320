// SPDX-License-Identifier: GPL-2.0

//! The openqos counters in the Prometheus text exposition format (version 0.0.4, what
//! node_exporter's textfile collector reads): meters, rules and their conditions, socket
//! groups, prioritized queues. Names follow the Prometheus conventions: an `openqos_`
//! prefix, the unit in the name (`_seconds`, `_bytes`), `_total` for counters; delays
//! are histograms with cumulative `le` buckets in seconds.

use openqos::abi::abi::hist;
use openqos::{Group, GroupType, Meter, PrioPort, Rule};
use std::fmt::Write;

/// Everything the exporter shows, read in one go.
pub struct Snapshot {
    pub meters: Vec<Meter>,
    pub rules: Vec<Rule>,
    pub groups: Vec<Group>,
    pub prios: Vec<PrioPort>,
}

/// One metric family: its `# HELP` and `# TYPE` lines once, then its samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out, name }
    }

    /// A sample with `labels` (`k="v"` pairs; values need no escaping: numbers and
    /// fixed words).
    fn sample(&mut self, suffix: &str, labels: &[(&str, String)], v: impl std::fmt::Display) {
        let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        let _ = writeln!(self.out, "{}{suffix}{{{}}} {v}", self.name, l.join(","));
    }

    /// The samples of a histogram of delays from one of the module's logarithmic
    /// histograms (`counts`, buckets of `abi::hist`), with buckets at every power of two
    /// microseconds (boundaries of the module's own buckets, so the counts are exact)
    /// and the sum in nanoseconds.
    fn histogram(&mut self, labels: &[(&str, String)], counts: &[u64], sum_ns: u64) {
        let mut cum = 0u64;
        for (i, c) in counts.iter().enumerate() {
            cum += c;
            // The last bucket is open-ended: it is +Inf below.
            if (i + 1) % 4 == 0 && i + 1 < counts.len() {
                let le = hist::upper(i) as f64 / 1e6;
                let mut l = labels.to_vec();
                l.push(("le", format!("{le}")));
                self.sample("_bucket", &l, cum);
            }
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf".into()));
        self.sample("_bucket", &l, cum);
        self.sample("_sum", labels, sum_ns as f64 / 1e9);
        self.sample("_count", labels, cum);
    }
}

fn port(p: u16) -> Vec<(&'static str, String)> {
    vec![("port", p.to_string())]
}

/// Labels of a sample.
type Labels = Vec<(&'static str, String)>;

/// A family of plain samples (no suffix): `(labels, value)` each.
fn family<V: std::fmt::Display>(
    o: &mut String,
    name: &'static str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, V)>,
) {
    let mut f = Family::new(o, name, kind, help);
    for (l, v) in samples {
        f.sample("", &l, v);
    }
}

/// The text of `s`.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let o = &mut out;
    meters(o, &s.meters);
    rules(o, &s.rules);
    groups(o, &s.groups);
    prios(o, &s.prios);
    out
}

fn meters(o: &mut String, ms: &[Meter]) {
    type Get = fn(&Meter) -> u64;
    let families: [(&str, &str, &str, Get); 6] = [
        (
            "openqos_port_waiting_connections",
            "gauge",
            "Connections in the accept queues of a metered listening port.",
            |m| m.waiting,
        ),
        (
            "openqos_port_accepted_connections_total",
            "counter",
            "Connections the servers accepted from a metered port.",
            |m| m.accepted,
        ),
        (
            "openqos_port_received_bytes_total",
            "counter",
            "Bytes the servers read on connections accepted from the port.",
            |m| m.rx_bytes,
        ),
        (
            "openqos_port_sent_bytes_total",
            "counter",
            "Bytes the servers wrote on connections accepted from the port.",
            |m| m.tx_bytes,
        ),
        (
            "openqos_port_open_connections",
            "gauge",
            "Connections accepted from the port and still open.",
            |m| m.open,
        ),
        (
            "openqos_port_listeners",
            "gauge",
            "Listening sockets of the port the meter looks after.",
            |m| m.listeners,
        ),
    ];
    for (name, kind, help, get) in families {
        family(
            o,
            name,
            kind,
            help,
            ms.iter().map(|m| (port(m.port), get(m))),
        );
    }
    family(
        o,
        "openqos_port_oldest_waiting_seconds",
        "gauge",
        "How long the oldest connection in the accept queues of a metered port has waited (0: none waits).",
        ms.iter().map(|m| (port(m.port), m.oldest_ns as f64 / 1e9)),
    );
    let mut f = Family::new(
        o,
        "openqos_port_accept_delay_seconds",
        "histogram",
        "Time from the end of the handshake to accept() of the connections accepted from the port.",
    );
    for m in ms {
        f.histogram(&port(m.port), &m.hist, m.delay_ns);
    }
}

fn rules(o: &mut String, rs: &[Rule]) {
    let per_rule = |get: fn(&Rule) -> u64| rs.iter().map(move |r| (port(r.port), get(r)));
    family(
        o,
        "openqos_rule_forwarded_connections_total",
        "counter",
        "Connections a rule moved into a server's (or another rule's) accept queue.",
        per_rule(|r| r.stats.forwarded),
    );
    family(
        o,
        "openqos_rule_default_connections_total",
        "counter",
        "Connections that took a rule's default port.",
        per_rule(|r| r.stats.default_hits),
    );
    family(
        o,
        "openqos_rule_refused_connections_total",
        "counter",
        "Connections a rule refused (reset), by cause.",
        rs.iter().flat_map(|r| {
            let s = &r.stats;
            [
                ("no_listener", s.no_listener),
                ("queue_full", s.queue_full),
                ("family_mismatch", s.family_mismatch),
                ("other", s.other_refused),
            ]
            .map(|(cause, v)| {
                let mut l = port(r.port);
                l.push(("cause", cause.into()));
                (l, v)
            })
        }),
    );
    family(
        o,
        "openqos_rule_waiting_connections",
        "gauge",
        "Connections waiting in a rule's own queues (content rules: for their data).",
        per_rule(|r| r.stats.waiting),
    );
    family(
        o,
        "openqos_rule_condition_matches_total",
        "counter",
        "Connections that matched a condition of a rule.",
        rs.iter().flat_map(|r| {
            r.conditions.iter().map(|c| {
                let mut l = port(r.port);
                l.push(("condition", c.index.to_string()));
                l.push(("out_port", c.out_port.to_string()));
                (l, c.hits)
            })
        }),
    );
}

fn groups(o: &mut String, gs: &[Group]) {
    let labels = |g: &Group| -> Labels {
        vec![
            ("group", g.id.to_string()),
            ("type", g.kind.name().to_owned()),
        ]
    };
    // The groups `keep` takes, each with `get` of it.
    let of = |keep: fn(&Group) -> bool, get: fn(&Group) -> u64| {
        gs.iter()
            .filter(move |g| keep(g))
            .map(move |g| (labels(g), get(g)))
    };
    family(
        o,
        "openqos_group_admitted_connections_total",
        "counter",
        "Connections accepted through an accept-ratio or accept-rate group.",
        of(|g| g.kind != GroupType::Output, |g| g.admitted),
    );
    family(
        o,
        "openqos_group_sent_bytes_total",
        "counter",
        "Bytes sent through an output group.",
        of(|g| g.kind == GroupType::Output, |g| g.admitted),
    );
    family(
        o,
        "openqos_group_held_total",
        "counter",
        "Times a group held a caller back for lack of quota.",
        of(|_| true, |g| g.held),
    );
    family(
        o,
        "openqos_group_sleeping_tasks",
        "gauge",
        "Tasks asleep on a group's quota.",
        of(|_| true, |g| g.sleeping),
    );
    family(
        o,
        "openqos_group_rate_limit_connections_per_second",
        "gauge",
        "The accept rate limit of an accept-rate group.",
        of(|g| g.kind == GroupType::Rate, |g| g.rate.unwrap_or(0)),
    );
    family(
        o,
        "openqos_group_rate_limit_bytes_per_second",
        "gauge",
        "The byte rate limit of an output group.",
        of(|g| g.kind == GroupType::Output, |g| g.rate.unwrap_or(0)),
    );
}

fn prios(o: &mut String, ps: &[PrioPort]) {
    type Get = fn(&openqos::PrioClass) -> u64;
    let families: [(&str, &str, &str, Get); 7] = [
        (
            "openqos_prio_waiting_connections",
            "gauge",
            "Connections of a class held by a prioritized port's queue.",
            |c| c.waiting,
        ),
        (
            "openqos_prio_admitted_connections_total",
            "counter",
            "Connections of a class that entered the queue.",
            |c| c.admitted,
        ),
        (
            "openqos_prio_released_connections_total",
            "counter",
            "Connections of a class released into the server's accept queue.",
            |c| c.released,
        ),
        (
            "openqos_prio_pushed_out_connections_total",
            "counter",
            "Held connections of a class reset to make room for a higher class.",
            |c| c.pushed_out,
        ),
        (
            "openqos_prio_expired_connections_total",
            "counter",
            "Held connections of a class reset at its deadline.",
            |c| c.expired,
        ),
        (
            "openqos_prio_refused_connections_total",
            "counter",
            "Arrivals of a class refused (queue full, or too late for the deadline).",
            |c| c.refused,
        ),
        (
            "openqos_prio_lost_connections_total",
            "counter",
            "Held connections of a class reset because no listener could take them.",
            |c| c.lost,
        ),
    ];
    let labels = |p: &PrioPort, c: &openqos::PrioClass| {
        vec![("port", p.port.to_string()), ("class", c.class.to_string())]
    };
    for (name, kind, help, get) in families {
        let samples = ps
            .iter()
            .flat_map(|p| p.classes.iter().map(move |c| (labels(p, c), get(c))));
        family(o, name, kind, help, samples);
    }
    let mut f = Family::new(
        o,
        "openqos_prio_wait_seconds",
        "histogram",
        "Time from the handshake to the release into the server's queue.",
    );
    for p in ps {
        for c in &p.classes {
            f.histogram(&labels(p, c), &c.hist, c.delay_ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let mut h = vec![0u64; hist::BUCKETS];
        h[hist::bucket(1_500)] = 3;
        h[hist::bucket(250_000)] = 2;
        h[hist::BUCKETS - 1] = 1;
        let meter = Meter {
            port: 8080,
            waiting: 2,
            oldest_ns: 1_250_000_000,
            accepted: 6,
            delay_ns: 3_000_000_000,
            rx_bytes: 100,
            tx_bytes: 2000,
            open: 1,
            listeners: 1,
            hist: h.clone(),
            ..Meter::default()
        };
        let rule = Rule {
            port: 80,
            kind: openqos::RuleType::Address,
            default_port: 8080,
            default_prio: Some(2),
            dual_stack: false,
            nocase: false,
            data_timeout_ms: None,
            automaton_states: None,
            conditions: vec![openqos::Condition {
                index: 1,
                matcher: openqos::Matcher::Weight { weight: 10 },
                out_port: 8081,
                prio: None,
                hits: 7,
            }],
            stats: Default::default(),
        };
        let group = |id, kind| Group {
            id,
            kind,
            rate: Some(50),
            burst: Some(5),
            ftp: false,
            members: vec![],
            admitted: 9,
            held: 1,
            sleeping: 0,
            tokens: 5,
            ftp_joined: 0,
            timer_runs: 0,
            lease_ms: None,
            fallback_rate: None,
            lease_expired: 0,
        };
        let prio = PrioPort {
            port: 8080,
            cap: 64,
            depth: 2,
            early_refuse: false,
            classes: (0..2)
                .map(|c| openqos::PrioClass {
                    class: c,
                    deadline_ms: None,
                    waiting: 1,
                    admitted: 5,
                    released: 4,
                    pushed_out: 0,
                    expired: 0,
                    refused: 0,
                    delay_ns: 40_000_000,
                    lost: 0,
                    hist: h.clone(),
                })
                .collect(),
        };
        Snapshot {
            meters: vec![meter],
            rules: vec![rule],
            groups: vec![group(1, GroupType::Rate), group(2, GroupType::Output)],
            prios: vec![prio],
        }
    }

    #[test]
    fn histograms_are_cumulative() {
        let text = render(&snapshot());
        let buckets: Vec<u64> = text
            .lines()
            .filter(|l| l.starts_with("openqos_port_accept_delay_seconds_bucket"))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
        assert_eq!(buckets.last(), Some(&6));
        assert!(text.contains("openqos_port_accept_delay_seconds_count{port=\"8080\"} 6"));
        assert!(text.contains("openqos_port_accept_delay_seconds_sum{port=\"8080\"} 3"));
        // 1.5 ms is below the 2.048 ms boundary, 250 ms below 262.144 ms.
        assert!(text.contains("le=\"0.002048\"} 3"), "{text}");
        assert!(text.contains("le=\"0.262144\"} 5"), "{text}");
    }

    /// The reference parser (Python's prometheus_client, Debian's
    /// python3-prometheus-client, installed by scripts/setup) reads every family back.
    #[test]
    fn the_reference_parser_reads_it() {
        let text = render(&snapshot());
        let checks = r#"assert fams["openqos_port_accept_delay_seconds"].type == "histogram", fams
assert fams["openqos_port_accepted_connections"].type == "counter"
assert fams["openqos_port_oldest_waiting_seconds"].samples[0].value == 1.25
assert fams["openqos_prio_wait_seconds"].type == "histogram"
s = [x for x in fams["openqos_rule_refused_connections"].samples if x.labels["cause"] == "queue_full"]
assert len(s) == 1 and s[0].value == 0, s"#;
        let n = openqos::prometheus_reference_check(&text, checks)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(n, text.lines().filter(|l| l.starts_with("# TYPE")).count());
    }
}
