// SPDX-License-Identifier: GPL-2.0

//! `qostest failnth`: every allocation of every mutating command fails once in turn
//! (testing.md's F1).
//!
//! The kernel's fault injection fails the N-th allocation (slab or page) a task makes
//! after N is written to its `/proc/thread-self/fail-nth`, and reads back 0 once it did
//! (`Documentation/fault-injection/fault-injection.rst`). For each case, a command of the
//! family on a known state, this sends the command with N = 1, 2, 3, ... until a run
//! passes without the fault being reached: then N - 1 allocations were swept, the whole
//! path of the request through the netlink core, the generic netlink family and the
//! module (sockets the module opens included). After each injected failure:
//!
//! - the command failed cleanly (an errno) and the configuration is exactly what it was
//!   before: rules with their conditions and counters and automaton sizes, meters and
//!   their roles, groups and their members and settings, prioritized queues, and the
//!   listening sockets of the namespace (a listener the module opened and did not close
//!   would show there); or
//! - it succeeded anyway (the allocator's failure had a fallback) and the configuration
//!   is exactly what a run without a fault gives;
//! - or the kernel could not send its answer (`ENOBUFS` on the socket): either of the two.
//!
//! Leaks are the suite's (kmemleak, after the final unload); kernel reports too.
//! Needs `CONFIG_FAULT_INJECTION`, `CONFIG_FAILSLAB` and `CONFIG_FAIL_PAGE_ALLOC` with
//! debugfs: the failslab and fail_page_alloc knobs are set here to count sleeping
//! allocations and order-0 pages too, and to stay quiet.

use anyhow::{bail, Context, Result};
use openqos::{
    Client, GroupSettings, GroupType, Matcher, PrioSettings, RuleConfig, RuleOptions, RuleType,
};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::FileExt;

#[derive(clap::Args)]
pub struct FailnthArgs {
    /// Only the cases whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Give up on a case after this many fault points (a path that long is a bug).
    #[arg(long, default_value_t = 5000)]
    max_points: u32,
    /// Print every attempt.
    #[arg(long)]
    verbose: bool,
}

/// Ports of the cases: a rule's incoming port, its targets, a metered port, a group
/// member, a prioritized port.
const RULE: u16 = 7900;
const OUT: u16 = 7901;
const OUT2: u16 = 7902;
const RULE2: u16 = 7903;
const METERED: u16 = 7910;
const MEMBER: u16 = 7920;
const MEMBER2: u16 = 7921;
const QUEUE: u16 = 7930;

type Step = fn(&mut Client) -> openqos::Result<()>;

/// A command on a known state: `setup` builds the state (no fault), `target` sends the
/// one request whose allocations are failed in turn.
struct Case {
    name: &'static str,
    setup: Step,
    target: Step,
}

fn v4(a: [u8; 4], len: u32) -> Matcher {
    Matcher::Ipv4 {
        addr: Ipv4Addr::from(a),
        mask: Ipv4Addr::from(u32::MAX.checked_shl(32 - len).unwrap_or(0)),
    }
}

fn content(s: &str) -> Matcher {
    Matcher::Content {
        pattern: s.to_string(),
    }
}

fn rule(c: &mut Client, port: u16, kind: RuleType, opts: RuleOptions) -> openqos::Result<()> {
    c.create_rule(port, kind, OUT, &opts)
}

fn addr_rule(c: &mut Client) -> openqos::Result<()> {
    rule(c, RULE, RuleType::Address, RuleOptions::default())?;
    c.add_condition(RULE, v4([10, 0, 0, 0], 8), OUT2)?;
    c.add_condition(RULE, v4([10, 1, 0, 0], 16), OUT)?;
    c.add_condition(
        RULE,
        Matcher::Ipv6 {
            addr: "2001:db8::".parse::<Ipv6Addr>().expect("address"),
            prefix: 32,
        },
        OUT2,
    )
}

fn content_rule(c: &mut Client) -> openqos::Result<()> {
    let opts = RuleOptions {
        nocase: true,
        data_timeout_ms: Some(500),
        ..Default::default()
    };
    rule(c, RULE, RuleType::Content, opts)?;
    c.add_condition(RULE, content("Host: premium"), OUT2)?;
    c.add_condition(RULE, content("GET /video"), OUT)
}

fn prob_rule(c: &mut Client) -> openqos::Result<()> {
    rule(c, RULE, RuleType::Probabilistic, RuleOptions::default())?;
    c.add_condition(RULE, Matcher::Weight { weight: 3000 }, OUT2)
}

fn queue(c: &mut Client) -> openqos::Result<()> {
    c.set_prio(
        QUEUE,
        &PrioSettings {
            classes: Some(3),
            deadlines: vec![(0, Some(100)), (2, Some(5000))],
            ..Default::default()
        },
    )
}

fn rate_group(c: &mut Client) -> openqos::Result<()> {
    let s = GroupSettings {
        rate: Some(50),
        burst: Some(5),
        ..Default::default()
    };
    c.create_group(1, GroupType::Rate, &s)
}

fn ratio_group(c: &mut Client) -> openqos::Result<()> {
    c.create_group(2, GroupType::Ratio, &GroupSettings::default())?;
    c.add_group_port(2, MEMBER, Some(3), false)
}

fn nothing(_: &mut Client) -> openqos::Result<()> {
    Ok(())
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "rule-new address",
            setup: nothing,
            target: |c| rule(c, RULE, RuleType::Address, RuleOptions::default()),
        },
        Case {
            name: "rule-new content",
            setup: nothing,
            target: |c| {
                let opts = RuleOptions {
                    nocase: true,
                    data_timeout_ms: Some(300),
                    ..Default::default()
                };
                rule(c, RULE, RuleType::Content, opts)
            },
        },
        Case {
            name: "rule-new probabilistic dual-stack",
            setup: nothing,
            target: |c| {
                let opts = RuleOptions {
                    dual_stack: true,
                    ..Default::default()
                };
                rule(c, RULE, RuleType::Probabilistic, opts)
            },
        },
        Case {
            name: "rule-new to a prioritized queue",
            setup: queue,
            target: |c| {
                let opts = RuleOptions {
                    default_prio: Some(1),
                    ..Default::default()
                };
                c.create_rule(RULE, RuleType::Address, QUEUE, &opts)
            },
        },
        Case {
            name: "rule-new chained",
            setup: addr_rule,
            target: |c| c.create_rule(RULE2, RuleType::Address, RULE, &Default::default()),
        },
        Case {
            name: "cond-new ipv4",
            setup: addr_rule,
            target: |c| c.add_condition(RULE, v4([192, 168, 1, 0], 24), OUT2),
        },
        Case {
            name: "cond-new ipv6",
            setup: addr_rule,
            target: |c| {
                let m = Matcher::Ipv6 {
                    addr: Ipv4Addr::new(127, 0, 0, 2).to_ipv6_mapped(),
                    prefix: 128,
                };
                c.add_condition(RULE, m, OUT2)
            },
        },
        Case {
            name: "cond-new content",
            setup: content_rule,
            target: |c| c.add_condition(RULE, content("Cookie: gold"), OUT2),
        },
        Case {
            name: "cond-new weight",
            setup: prob_rule,
            target: |c| c.add_condition(RULE, Matcher::Weight { weight: 2000 }, OUT),
        },
        Case {
            name: "cond-new with a class",
            setup: |c| {
                queue(c)?;
                addr_rule(c)
            },
            target: |c| c.set_condition_prio(RULE, None, v4([172, 16, 0, 0], 12), QUEUE, Some(2)),
        },
        Case {
            name: "cond-set address",
            setup: addr_rule,
            target: |c| c.set_condition(RULE, Some(2), v4([10, 2, 0, 0], 16), OUT2),
        },
        Case {
            name: "cond-set content",
            setup: content_rule,
            target: |c| c.set_condition(RULE, Some(1), content("Host: gold"), OUT),
        },
        Case {
            name: "cond-del address",
            setup: addr_rule,
            target: |c| c.delete_condition(RULE, 2),
        },
        Case {
            name: "cond-del content",
            setup: content_rule,
            target: |c| c.delete_condition(RULE, 1),
        },
        Case {
            name: "rule-del",
            setup: content_rule,
            target: |c| c.delete_rule(RULE),
        },
        Case {
            name: "flush",
            setup: |c| {
                addr_rule(c)?;
                c.create_rule(RULE2, RuleType::Address, OUT, &Default::default())
            },
            target: |c| c.flush(),
        },
        Case {
            name: "ruleset-replace",
            setup: addr_rule,
            target: |c| {
                let set = [
                    RuleConfig {
                        port: RULE,
                        kind: RuleType::Address,
                        default_port: OUT,
                        opts: RuleOptions::default(),
                        conditions: vec![
                            (v4([10, 0, 0, 0], 8), OUT2, None),
                            (v4([10, 9, 0, 0], 16), OUT, None),
                        ],
                    },
                    RuleConfig {
                        port: RULE2,
                        kind: RuleType::Content,
                        default_port: OUT,
                        opts: RuleOptions::default(),
                        conditions: vec![(content("Host: a"), OUT2, None)],
                    },
                ];
                c.replace_rules(&set, false)
            },
        },
        Case {
            name: "ruleset-replace to nothing",
            setup: content_rule,
            target: |c| c.replace_rules(&[], false),
        },
        Case {
            name: "meter-new",
            setup: nothing,
            target: |c| c.create_meter(METERED),
        },
        Case {
            name: "meter-del",
            setup: |c| c.create_meter(METERED),
            target: |c| c.delete_meter(METERED),
        },
        Case {
            name: "group-new rate",
            setup: nothing,
            target: rate_group,
        },
        Case {
            name: "group-new output ftp",
            setup: nothing,
            target: |c| {
                let s = GroupSettings {
                    rate: Some(100_000),
                    ftp: Some(true),
                    ..Default::default()
                };
                c.create_group(3, GroupType::Output, &s)
            },
        },
        Case {
            name: "group-set lease",
            setup: rate_group,
            target: |c| {
                let s = GroupSettings {
                    rate: Some(10),
                    lease_ms: Some(3_600_000),
                    ..Default::default()
                };
                c.set_group(1, &s)
            },
        },
        Case {
            name: "group-set weight",
            setup: ratio_group,
            target: |c| c.set_group_weight(2, MEMBER, 7),
        },
        Case {
            name: "group-port-add",
            setup: ratio_group,
            target: |c| c.add_group_port(2, MEMBER2, Some(1), false),
        },
        Case {
            name: "group-port-add metered ftp",
            setup: |c| {
                rate_group(c)?;
                c.create_meter(MEMBER2)
            },
            target: |c| c.add_group_port(1, MEMBER2, None, true),
        },
        Case {
            name: "group-port-del",
            setup: ratio_group,
            target: |c| c.delete_group_port(2, MEMBER),
        },
        Case {
            name: "group-del",
            setup: ratio_group,
            target: |c| c.delete_group(2),
        },
        Case {
            name: "prio-set new",
            setup: nothing,
            target: queue,
        },
        Case {
            name: "prio-set change",
            setup: queue,
            target: |c| {
                let s = PrioSettings {
                    cap: Some(64),
                    depth: Some(4),
                    early_refuse: Some(true),
                    deadlines: vec![(1, Some(700))],
                    ..Default::default()
                };
                c.set_prio(QUEUE, &s)
            },
        },
        Case {
            name: "prio-del",
            setup: queue,
            target: |c| c.delete_prio(QUEUE),
        },
    ]
}

/// Everything the namespace's configuration is, without what changes by itself (group
/// tokens, timer runs, the time left of a lease): what a failed command must leave as
/// it was.
fn snapshot(c: &mut Client) -> Result<String> {
    let mut s = String::new();
    for r in c.rules(None)? {
        s += &format!("{r:?}\n");
    }
    for m in c.meters(None)? {
        s += &format!(
            "meter {} auto {} requested {} grouped {} prio {}\n",
            m.port, m.auto, m.requested, m.grouped, m.prio
        );
    }
    for g in c.groups(None)? {
        s += &format!(
            "group {} {:?} rate {:?} burst {:?} ftp {} leased {} fallback {:?}\n",
            g.id,
            g.kind,
            g.rate,
            g.burst,
            g.ftp,
            g.lease_ms.is_some(),
            g.fallback_rate
        );
        for m in &g.members {
            s += &format!("  member {} weight {} ftp {}\n", m.port, m.weight, m.ftp);
        }
    }
    for p in c.prios(None)? {
        s += &format!("{:?}\n", p.settings());
    }
    s += &format!("listening {:?}\n", listeners()?);
    Ok(s)
}

/// The TCP ports something listens on in this namespace, by family.
fn listeners() -> Result<Vec<(u8, u16)>> {
    let mut v = Vec::new();
    for (fam, path) in [(4u8, "/proc/net/tcp"), (6, "/proc/net/tcp6")] {
        let text = std::fs::read_to_string(path).with_context(|| path.to_string())?;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ...: LISTEN is 0A.
            if f.len() > 3 && f[3] == "0A" {
                let port = f[1].rsplit(':').next().unwrap_or("0");
                v.push((fam, u16::from_str_radix(port, 16)?));
            }
        }
    }
    v.sort_unstable();
    Ok(v)
}

/// Removes every rule, queue, group and meter.
fn clear(c: &mut Client) -> Result<()> {
    c.flush()?;
    for p in c.prios(None)? {
        c.delete_prio(p.port)?;
    }
    for g in c.groups(None)? {
        c.delete_group(g.id)?;
    }
    // Every meter, also those rules and groups left behind (their counters stay).
    for m in c.meters(None)? {
        c.delete_meter(m.port)?;
    }
    Ok(())
}

/// This thread's `fail-nth`.
struct FailNth(File);

impl FailNth {
    fn open() -> Result<Self> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/proc/thread-self/fail-nth")
            .context("/proc/thread-self/fail-nth (CONFIG_FAULT_INJECTION)")?;
        Ok(FailNth(f))
    }

    fn arm(&self, n: u32) -> Result<()> {
        self.0.write_at(n.to_string().as_bytes(), 0)?;
        Ok(())
    }

    /// Whether the armed fault was injected (the file reads 0); disarms it either way.
    fn injected(&self) -> Result<bool> {
        let mut b = [0u8; 16];
        let n = self.0.read_at(&mut b, 0)?;
        let left: u32 = std::str::from_utf8(&b[..n])?.trim().parse()?;
        if left != 0 {
            self.arm(0)?;
        }
        Ok(left == 0)
    }
}

/// Makes the fault injection count every allocation a task makes (sleeping ones and
/// order-0 pages too), without a report for each.
fn configure() -> Result<()> {
    for (file, value) in [
        ("failslab/ignore-gfp-wait", "N"),
        ("failslab/verbose", "0"),
        ("fail_page_alloc/ignore-gfp-wait", "N"),
        ("fail_page_alloc/ignore-gfp-highmem", "N"),
        ("fail_page_alloc/min-order", "0"),
        ("fail_page_alloc/verbose", "0"),
    ] {
        let path = format!("/sys/kernel/debug/{file}");
        std::fs::write(&path, value).with_context(|| path.clone())?;
    }
    Ok(())
}

/// The errno of a refusal (`socket-` prefixed: the socket's own, an answer lost).
fn errno_of(e: &openqos::Error) -> String {
    match (e, e.errno()) {
        (openqos::Error::Io(io), _) => match io.raw_os_error() {
            Some(n) => format!("socket-{:?}", nix::errno::Errno::from_raw(n)),
            None => format!("socket: {io}"),
        },
        (_, Some(n)) => format!("{:?}", nix::errno::Errno::from_raw(n)),
        (_, None) => format!("{e}"),
    }
}

/// The lines of `b` that `a` lacks (`+`) and those of `a` that `b` lacks (`-`).
fn diff(a: &str, b: &str) -> String {
    let mut out = String::new();
    for l in a.lines().filter(|l| !b.lines().any(|x| x == *l)) {
        out += &format!("    - {l}\n");
    }
    for l in b.lines().filter(|l| !a.lines().any(|x| x == *l)) {
        out += &format!("    + {l}\n");
    }
    out
}

pub fn failnth(a: &FailnthArgs) -> Result<()> {
    configure()?;
    let nth = FailNth::open()?;
    let mut c = Client::connect()?;
    let (mut points, mut failed_cases) = (0u32, 0u32);
    let mut errnos: BTreeMap<String, u32> = BTreeMap::new();
    let mut ran = 0;
    for case in cases() {
        if a.only.as_deref().is_some_and(|o| !case.name.contains(o)) {
            continue;
        }
        ran += 1;
        match sweep(&mut c, &nth, &case, a, &mut errnos) {
            Ok(n) => {
                println!("{}: {n} fault points, each clean", case.name);
                points += n;
            }
            Err(e) => {
                println!("WRONG {}: {e:#}", case.name);
                failed_cases += 1;
                // Start the next case from a known state on a fresh socket.
                c = Client::connect()?;
            }
        }
    }
    clear(&mut c)?;
    let e: Vec<String> = errnos.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    println!(
        "failnth: cases={ran} points={points} wrong={failed_cases} errnos={}",
        e.join(",")
    );
    if ran == 0 {
        bail!("no case matched");
    }
    if failed_cases > 0 {
        bail!("{failed_cases} cases left a wrong state after a failed allocation");
    }
    Ok(())
}

/// Fails each allocation of `case`'s request in turn; returns how many there were.
fn sweep(
    c: &mut Client,
    nth: &FailNth,
    case: &Case,
    a: &FailnthArgs,
    errnos: &mut BTreeMap<String, u32>,
) -> Result<u32> {
    let fresh = |c: &mut Client| -> Result<String> {
        clear(c)?;
        (case.setup)(c).context("setup")?;
        snapshot(c)
    };
    let before = fresh(c)?;
    (case.target)(c).context("the command without a fault")?;
    let after = snapshot(c)?;
    if after == before {
        bail!("the command changed nothing without a fault");
    }
    let mut state = fresh(c)?;
    for n in 1..=a.max_points {
        if state != before {
            state = fresh(c)?;
            if state != before {
                bail!("setup is not repeatable:\n{}", diff(&before, &state));
            }
        }
        nth.arm(n)?;
        let r = (case.target)(c);
        let injected = nth.injected()?;
        state = snapshot(c)?;
        if a.verbose {
            println!(
                "  {} n={n} injected={injected} -> {}",
                case.name,
                r.as_ref().map_or_else(errno_of, |_| "ok".into())
            );
        }
        if !injected {
            // The request made fewer than n allocations: all swept.
            if let Err(e) = r {
                bail!("without a fault (n={n}) the command failed: {e}");
            }
            if state != after {
                bail!(
                    "without a fault (n={n}) the state differs:\n{}",
                    diff(&after, &state)
                );
            }
            return Ok(n - 1);
        }
        match &r {
            Ok(()) => {
                *errnos.entry("ok".into()).or_default() += 1;
                if state != after {
                    bail!("allocation {n} failed, the command succeeded, but the state is not the command's:\n{}", diff(&after, &state));
                }
            }
            Err(e) => {
                let what = errno_of(e);
                let lost_answer = matches!(e, openqos::Error::Io(_));
                *errnos.entry(what.clone()).or_default() += 1;
                if state != before && !(lost_answer && state == after) {
                    bail!(
                        "allocation {n} failed ({what}) and the state changed:\n{}",
                        diff(&before, &state)
                    );
                }
            }
        }
    }
    bail!("more than {} fault points", a.max_points)
}
