// SPDX-License-Identifier: GPL-2.0

//! `tcpchains`: manage openqos classification rules.
//!
//! The syntax of the paper works verbatim:
//!
//! ```text
//! tcpchains -A a -p 21 -o 1021
//! tcpchains -a a -p 21 -i 128.143.0.0 -m 255.255.0.0 -r 2021
//! ```

mod full;

use anyhow::{bail, Context};
use clap::{ArgGroup, Parser};
use openqos::{Client, Error, Matcher, PrioSettings, RuleConfig, RuleOptions, RuleType};
use std::net::IpAddr;
use std::process::ExitCode;

/// Exit codes scripts can branch on (see tcpchains(8)).
mod exit {
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_LOADED: u8 = 3;
    pub const PERMISSION: u8 = 4;
    pub const NOT_FOUND: u8 = 5;
    pub const EXISTS: u8 = 6;
    pub const ABI: u8 = 7;
}

#[derive(Parser, Debug)]
#[command(
    name = "tcpchains",
    version,
    about = "Manage openqos connection classification rules",
    long_about = "Manage openqos connection classification rules.\n\n\
        A rule owns an incoming port: the openqos module listens there and moves every \
        connection to one of several outgoing ports, where unmodified server instances \
        listen. Conditions are tried in the order added; the first match wins, else the \
        rule's default port.",
    after_help = "Examples (the paper's syntax):\n  \
        tcpchains -A a -p 21 -o 1021\n  \
        tcpchains -a a -p 21 -i 128.143.0.0 -m 255.255.0.0 -r 2021\n  \
        tcpchains -a a -p 21 -i 2001:db8::/32 -r 2021\n  \
        tcpchains -A d -p 80 -o 8080\n  \
        tcpchains -a d -p 80 -r 8081 -c 3000\n  \
        tcpchains -a d -p 80 -r 8081 -c 5000 -R 1\n  \
        tcpchains -A c -p 80 -o 8080\n  \
        tcpchains -a c -p 80 -s www.foo.com -r 8081\n  \
        tcpchains -A c -p 80 -o 8080 --nocase --timeout 500\n  \
        tcpchains -a c -p 80 -s '\\r\\nHost: www.foo.com\\r\\n' -e -r 8081\n  \
        tcpchains -L\n  tcpchains -d 1 -p 21\n  tcpchains -D -p 21\n  tcpchains -F\n  \
        tcpchains -S > rules.txt\n  tcpchains --restore rules.txt\n\n\
        A prioritized accept queue for one server on port 8080, three classes:\n  \
        tcpchains -Q 8080 --classes 3 --cap 64 --deadline 0:2000 --deadline 2:10000\n  \
        tcpchains -A a -p 80 -o 8080 --prio 2\n  \
        tcpchains -a a -p 80 -i 10.1.0.0/16 -r 8080 --prio 0\n  \
        tcpchains -X 8080",
    group(ArgGroup::new("action").required(true)
        .args(["new_rule", "add", "list", "delete_rule", "delete", "flush", "save", "restore",
               "prio_port", "delete_prio_port", "save_all", "restore_all"]))
)]
struct Cli {
    /// Create a rule of TYPE: a (address), c (content), d (probabilistic).
    #[arg(short = 'A', long = "new-rule", value_name = "TYPE", value_parser = rule_type)]
    new_rule: Option<RuleType>,
    /// Append a condition of TYPE to the rule on -p.
    #[arg(short = 'a', long = "add", value_name = "TYPE", value_parser = rule_type)]
    add: Option<RuleType>,
    /// List rules, their conditions and counters (all rules, or the rule on -p).
    #[arg(short = 'L', long)]
    list: bool,
    /// Delete the rule on -p.
    #[arg(short = 'D', long = "delete-rule")]
    delete_rule: bool,
    /// Delete the condition at position INDEX (as listed by -L) of the rule on -p.
    #[arg(short = 'd', long = "delete", value_name = "INDEX")]
    delete: Option<u32>,
    /// Delete every rule in this network namespace.
    #[arg(short = 'F', long)]
    flush: bool,
    /// Print every rule as the tcpchains arguments that create it, one line each: a rule
    /// set that --restore reads back.
    #[arg(short = 'S', long)]
    save: bool,
    /// Replace every rule of this network namespace with the rule set in FILE ("-":
    /// standard input), atomically: all of it or, on any error, nothing.
    #[arg(long, value_name = "FILE")]
    restore: Option<String>,
    /// With --restore or --restore-all: only check the rule set (the kernel validates
    /// it; nothing changes).
    #[arg(long)]
    test: bool,
    /// Print the whole configuration of this network namespace: the rule set (as -S),
    /// the ports metered on request, the socket groups and their ports.
    #[arg(long)]
    save_all: bool,
    /// Make the whole configuration that of FILE ("-": standard input), as --save-all
    /// writes it: all of it, or on any error the previous configuration back.
    #[arg(long, value_name = "FILE")]
    restore_all: Option<String>,
    /// Give PORT (where a server listens) a prioritized accept queue, or change its
    /// settings: connections that conditions send there with --prio wait in the module
    /// and go to the server in priority order (0 first) as it accepts.
    #[arg(short = 'Q', long = "prio-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    prio_port: Option<u16>,
    /// Remove the prioritized queue of PORT: what it holds goes to the server as far as
    /// its queue has room, the rest is reset.
    #[arg(short = 'X', long = "delete-prio-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    delete_prio_port: Option<u16>,
    /// With -A (the default port) or -a (the condition's port): the priority class of
    /// the connections there, 0 (highest) to 7, if that port has a prioritized queue.
    #[arg(long, value_name = "CLASS", value_parser = clap::value_parser!(u8).range(0..8))]
    prio: Option<u8>,
    /// With -Q, creating the queue: number of classes, 1..8 (default 3).
    #[arg(long, value_name = "N", requires = "prio_port", value_parser = clap::value_parser!(u8).range(1..=8))]
    classes: Option<u8>,
    /// With -Q: most connections held, all classes together (1..1024; default 256). Past
    /// it an arrival pushes out the newest connection of the lowest class below its own,
    /// or is refused.
    #[arg(long, value_name = "N", requires = "prio_port")]
    cap: Option<u32>,
    /// With -Q: most connections released into the server's queue and not yet accepted
    /// (1..64; default 2).
    #[arg(long, value_name = "N", requires = "prio_port")]
    depth: Option<u32>,
    /// With -Q: deadline of a class, CLASS:MS (milliseconds since the handshake; a held
    /// connection past it is reset), or CLASS:none. Repeatable.
    #[arg(long, value_name = "CLASS:MS", requires = "prio_port", value_parser = deadline)]
    deadline: Vec<(u8, Option<u32>)>,
    /// With -Q: on, refuse an arrival at once when its expected wait (connections ahead
    /// of it times the interval between the server's accepts) exceeds its deadline.
    #[arg(long, value_name = "on|off", requires = "prio_port", value_parser = on_off)]
    early_refuse: Option<bool>,

    /// Incoming port of the rule.
    #[arg(short = 'p', long, value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Default outgoing port (with -A).
    #[arg(short = 'o', long = "default", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    default: Option<u16>,
    /// Source address of an address condition: IPv4 (with -m) or IPv6, ADDR[/PREFIX].
    #[arg(short = 'i', long = "address", value_name = "ADDR")]
    address: Option<String>,
    /// Mask for -i: dotted (255.255.0.0) or a prefix length (16).
    #[arg(short = 'm', long, value_name = "MASK")]
    mask: Option<String>,
    /// Outgoing port of the condition.
    #[arg(short = 'r', long = "to", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    to: Option<u16>,
    /// String of a content condition.
    #[arg(short = 's', long, value_name = "STRING")]
    string: Option<String>,
    /// With -s: interpret \\r, \\n, \\t, \\\\ and \\xHH (below 80) in the string.
    #[arg(short = 'e', long, requires = "string")]
    escapes: bool,
    /// Weight of a probabilistic condition, in 1/10000 (3000 = 30%).
    #[arg(short = 'c', long, value_name = "WEIGHT", value_parser = clap::value_parser!(u16).range(1..=10000))]
    chance: Option<u16>,
    /// With -a: replace the condition at INDEX atomically instead of appending.
    #[arg(short = 'R', long, value_name = "INDEX", requires = "add")]
    replace: Option<u32>,
    /// With -A: listen on one dual-stack [::] socket (for servers bound to dual-stack [::]).
    #[arg(long)]
    dual_stack: bool,
    /// With -A c: match strings ignoring ASCII case (e.g. Host headers).
    #[arg(long)]
    nocase: bool,
    /// With -A c: milliseconds a connection may wait for decisive data before it goes to
    /// the default port (10..60000; default 2000).
    #[arg(long, value_name = "MS")]
    timeout: Option<u32>,
    /// JSON output for -L.
    #[arg(short = 'j', long)]
    json: bool,
}

fn deadline(s: &str) -> Result<(u8, Option<u32>), String> {
    let (c, ms) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}': expected CLASS:MS or CLASS:none"))?;
    let c: u8 = c
        .parse()
        .ok()
        .filter(|c| *c < 8)
        .ok_or_else(|| format!("'{c}': a class is 0..7"))?;
    if ms == "none" {
        return Ok((c, None));
    }
    let ms: u32 = ms
        .parse()
        .ok()
        .filter(|m| *m > 0)
        .ok_or_else(|| format!("'{ms}': a deadline is a number of milliseconds, at least 1"))?;
    Ok((c, Some(ms)))
}

fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("'{s}': expected on or off")),
    }
}

/// The settings `-Q` gives.
fn prio_of(cli: &Cli) -> Option<(u16, PrioSettings)> {
    cli.prio_port.map(|port| {
        (
            port,
            PrioSettings {
                classes: cli.classes,
                cap: cli.cap,
                depth: cli.depth,
                early_refuse: cli.early_refuse,
                deadlines: cli.deadline.clone(),
            },
        )
    })
}

fn rule_type(s: &str) -> Result<RuleType, String> {
    match s {
        "a" | "address" => Ok(RuleType::Address),
        "c" | "content" => Ok(RuleType::Content),
        "d" | "probabilistic" => Ok(RuleType::Probabilistic),
        _ => Err(format!("unknown rule type '{s}' (expected a, c or d)")),
    }
}

/// Parses `-i` and `-m` into a matcher.
fn matcher(addr: &str, mask: Option<&str>) -> anyhow::Result<Matcher> {
    let (a, inline) = match addr.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (addr, None),
    };
    let ip: IpAddr = a.parse().with_context(|| format!("bad address '{a}'"))?;
    let mask = match (inline, mask) {
        (Some(_), Some(_)) => {
            bail!("give the prefix either in -i ADDR/PREFIX or with -m, not both")
        }
        (m, n) => m.or(n),
    };
    match ip {
        IpAddr::V4(addr) => {
            let mask = match mask {
                None => std::net::Ipv4Addr::BROADCAST,
                Some(m) if m.contains('.') => {
                    m.parse().with_context(|| format!("bad mask '{m}'"))?
                }
                Some(m) => {
                    let len: u32 = m
                        .parse()
                        .ok()
                        .filter(|l| *l <= 32)
                        .with_context(|| format!("bad mask '{m}' (0..32 or dotted)"))?;
                    std::net::Ipv4Addr::from(u32::MAX.checked_shl(32 - len).unwrap_or(0))
                }
            };
            Ok(Matcher::Ipv4 { addr, mask })
        }
        IpAddr::V6(addr) => {
            let prefix = match mask {
                None => 128,
                Some(m) => m
                    .parse()
                    .ok()
                    .filter(|l| *l <= 128)
                    .with_context(|| format!("bad IPv6 prefix length '{m}' (0..128)"))?,
            };
            Ok(Matcher::Ipv6 { addr, prefix })
        }
    }
}

fn need<T>(v: Option<T>, what: &str) -> anyhow::Result<T> {
    v.with_context(|| format!("missing {what}"))
}

/// The rule `-A` creates: port, default port, type, options.
fn rule_of(cli: &Cli) -> anyhow::Result<Option<(u16, u16, RuleType, RuleOptions)>> {
    let Some(kind) = cli.new_rule else {
        return Ok(None);
    };
    let port = need(cli.port, "-p PORT (incoming port)")?;
    let default = need(cli.default, "-o PORT (default outgoing port)")?;
    let opts = RuleOptions {
        dual_stack: cli.dual_stack,
        nocase: cli.nocase,
        data_timeout_ms: cli.timeout,
        default_prio: cli.prio,
    };
    Ok(Some((port, default, kind, opts)))
}

/// The condition `-a` adds: port, matcher, outgoing port.
fn condition_of(cli: &Cli) -> anyhow::Result<(u16, Matcher, u16)> {
    if let Some(kind) = cli.add {
        let port = need(cli.port, "-p PORT (incoming port)")?;
        let to = need(cli.to, "-r PORT (outgoing port)")?;
        let m = match kind {
            RuleType::Address => {
                let addr = need(cli.address.as_deref(), "-i ADDR")?;
                matcher(addr, cli.mask.as_deref())?
            }
            RuleType::Probabilistic => Matcher::Weight {
                weight: need(cli.chance, "-c WEIGHT (in 1/10000)")?,
            },
            RuleType::Content => {
                let s = need(cli.string.as_deref(), "-s STRING")?;
                Matcher::Content {
                    pattern: if cli.escapes {
                        unescape(s)?
                    } else {
                        s.to_owned()
                    },
                }
            }
        };
        Ok((port, m, to))
    } else {
        bail!("not a condition")
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    if cli.new_rule != Some(RuleType::Content) && (cli.nocase || cli.timeout.is_some()) {
        bail!("--nocase and --timeout are options of content rules (-A c)");
    }
    if cli.prio.is_some() && cli.new_rule.is_none() && cli.add.is_none() {
        bail!("--prio is the class of a rule's default port (-A) or of a condition (-a)");
    }
    if cli.test && cli.restore.is_none() && cli.restore_all.is_none() {
        bail!("--test goes with --restore or --restore-all");
    }
    if let Some(path) = &cli.restore {
        let set = read_rule_set(path)?;
        return restore(&set, cli.test);
    }
    if let Some(path) = &cli.restore_all {
        let text = read_text(path)?;
        let want = full::parse(&text).with_context(|| path.to_owned())?;
        return full::restore(&want, cli.test);
    }
    let mut c = Client::connect()?;
    if let Some((port, s)) = prio_of(cli) {
        return Ok(c.set_prio(port, &s)?);
    }
    if let Some(port) = cli.delete_prio_port {
        return Ok(c.delete_prio(port)?);
    }
    if let Some((port, default, kind, opts)) = rule_of(cli)? {
        c.create_rule(port, kind, default, &opts)?;
    } else if cli.add.is_some() {
        let (port, m, to) = condition_of(cli)?;
        c.set_condition_prio(port, cli.replace, m, to, cli.prio)?;
    } else if cli.list {
        let rules = c.rules(cli.port)?;
        if cli.json {
            println!("{}", serde_json::to_string_pretty(&rules)?);
        } else {
            for r in &rules {
                print_rule(r);
            }
            if cli.port.is_none() {
                for p in &c.prios(None)? {
                    print_prio(p);
                }
            }
        }
    } else if cli.delete_rule {
        c.delete_rule(need(cli.port, "-p PORT")?)?;
    } else if let Some(i) = cli.delete {
        c.delete_condition(need(cli.port, "-p PORT")?, i)?;
    } else if cli.flush {
        c.flush()?;
    } else if cli.save {
        print!("{}", save(&c.prios(None)?, &c.rules(None)?));
    } else if cli.save_all {
        print!("{}", full::text(&mut c)?);
    }
    Ok(())
}

/// Interprets the escapes of `-e`.
fn unescape(s: &str) -> anyhow::Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(ch) = it.next() {
        if ch != '\\' {
            out.push(ch);
            continue;
        }
        match it.next() {
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some('x') => {
                let hex: String = it.by_ref().take(2).collect();
                let v = u8::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|v| *v != 0 && v.is_ascii())
                    .with_context(|| format!("bad escape '\\x{hex}' (01..7f)"))?;
                out.push(char::from(v));
            }
            other => bail!(
                "bad escape '\\{}' (\\r \\n \\t \\\\ \\xHH)",
                other.map(String::from).unwrap_or_default()
            ),
        }
    }
    Ok(out)
}

/// The inverse of [`unescape`], for strings that need it (`None`: none do).
fn escape(s: &str) -> Option<String> {
    if !s.chars().any(|c| c.is_ascii_control()) {
        return None;
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    Some(out)
}

fn quote(s: &str) -> String {
    shlex::try_quote(s).map_or_else(|_| format!("'{s}'"), |q| q.into_owned())
}

/// The options a rule was created with, as option names and, for the data timeout, its
/// value in milliseconds: shared by `-S` (as `--name [ms]`) and `-L` (as `name [ms]ms`).
fn rule_options(r: &openqos::Rule) -> impl Iterator<Item = (&'static str, Option<u32>)> {
    [
        r.dual_stack.then_some(("dual-stack", None)),
        r.nocase.then_some(("nocase", None)),
        r.data_timeout_ms.map(|ms| ("timeout", Some(ms))),
    ]
    .into_iter()
    .flatten()
}

/// A prioritized port's settings as the `-Q` arguments that recreate it.
fn prio_line(p: &openqos::PrioPort) -> String {
    let mut out = format!(
        "-Q {} --classes {} --cap {} --depth {}",
        p.port,
        p.classes.len(),
        p.cap,
        p.depth
    );
    for c in &p.classes {
        if let Some(ms) = c.deadline_ms {
            out += &format!(" --deadline {}:{ms}", c.class);
        }
    }
    if p.early_refuse {
        out += " --early-refuse on";
    }
    out
}

/// The rule set as tcpchains arguments, one prioritized port, rule or condition per line.
fn save(prios: &[openqos::PrioPort], rules: &[openqos::Rule]) -> String {
    let mut out =
        String::from("# openqos rule set (tcpchains -S); apply with: tcpchains --restore FILE\n");
    for p in prios {
        out += &prio_line(p);
        out.push('\n');
    }
    for r in rules {
        let t = r.kind.letter();
        out += &format!("-A {t} -p {} -o {}", r.port, r.default_port);
        for (name, ms) in rule_options(r) {
            out += &format!(" --{name}");
            if let Some(ms) = ms {
                out += &format!(" {ms}");
            }
        }
        if let Some(c) = r.default_prio {
            out += &format!(" --prio {c}");
        }
        out.push('\n');
        for c in &r.conditions {
            let m = match &c.matcher {
                Matcher::Ipv4 { .. } | Matcher::Ipv6 { .. } => format!("-i {}", c.matcher),
                Matcher::Weight { weight } => format!("-c {weight}"),
                Matcher::Content { pattern } => match escape(pattern) {
                    Some(e) => format!("-s {} -e", quote(&e)),
                    None => format!("-s {}", quote(pattern)),
                },
            };
            out += &format!("-a {t} -p {} {m} -r {}", r.port, c.out_port);
            if let Some(p) = c.prio {
                out += &format!(" --prio {p}");
            }
            out.push('\n');
        }
    }
    out
}

/// A rule set: the prioritized ports (`-Q` lines) and the rules.
#[derive(Debug, Default, PartialEq, Eq)]
struct RuleSet {
    prios: Vec<(u16, PrioSettings)>,
    rules: Vec<RuleConfig>,
}

/// Parses a rule set: lines of `-Q`, `-A` and `-a` arguments, `#` comments.
fn parse_rule_set(text: &str) -> anyhow::Result<RuleSet> {
    let mut set: Vec<RuleConfig> = Vec::new();
    let mut prios: Vec<(u16, PrioSettings)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words = shlex::split(line).with_context(|| format!("line {n}: unbalanced quotes"))?;
        let cli = Cli::try_parse_from(std::iter::once("tcpchains".to_owned()).chain(words))
            .map_err(|e| anyhow::anyhow!("line {n}: {}", e.render().to_string().trim_end()))?;
        let at = |e: anyhow::Error| e.context(format!("line {n}"));
        if cli.new_rule != Some(RuleType::Content) && (cli.nocase || cli.timeout.is_some()) {
            bail!("line {n}: --nocase and --timeout are options of content rules (-A c)");
        }
        if cli.prio.is_some() && cli.new_rule.is_none() && cli.add.is_none() {
            bail!("line {n}: --prio is an option of -A and -a lines");
        }
        if let Some((port, s)) = prio_of(&cli) {
            if prios.iter().any(|(p, _)| *p == port) {
                bail!("line {n}: a second -Q line for port {port}");
            }
            prios.push((port, s));
        } else if let Some((port, default_port, kind, opts)) = rule_of(&cli).map_err(at)? {
            if set.iter().any(|r| r.port == port) {
                bail!("line {n}: a second rule on incoming port {port}");
            }
            set.push(RuleConfig {
                port,
                kind,
                default_port,
                opts,
                conditions: Vec::new(),
            });
        } else if cli.add.is_some() && cli.replace.is_none() {
            let (port, m, to) = condition_of(&cli).map_err(at)?;
            let Some(r) = set.iter_mut().find(|r| r.port == port) else {
                bail!("line {n}: no -A rule on incoming port {port} before this condition");
            };
            if Some(r.kind) != cli.add {
                bail!(
                    "line {n}: the rule on port {port} is of type {}",
                    r.kind.letter()
                );
            }
            r.conditions.push((m, to, cli.prio));
        } else {
            bail!("line {n}: a rule set holds only -Q (prioritized port), -A (rule) and -a (condition) lines");
        }
    }
    Ok(RuleSet { prios, rules: set })
}

fn read_text(path: &str) -> anyhow::Result<String> {
    if path == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {path}"))
    }
}

fn read_rule_set(path: &str) -> anyhow::Result<RuleSet> {
    parse_rule_set(&read_text(path)?).with_context(|| path.to_owned())
}

/// Applies a rule set: the rules atomically (all or nothing), then the prioritized
/// ports of its `-Q` lines, one at a time; prioritized ports it does not name are
/// removed. With `test`, the kernel only checks the rules.
fn restore(set: &RuleSet, test: bool) -> anyhow::Result<()> {
    let mut c = Client::connect()?;
    c.replace_rules(&set.rules, test).map_err(|e| {
        let ctx = match &e {
            Error::InRule { index, .. } => format!("rule on port {}", set.rules[*index].port),
            _ => "rule set".into(),
        };
        anyhow::Error::new(e).context(ctx)
    })?;
    if test {
        return Ok(());
    }
    restore_prios(&mut c, set)
}

/// Makes the prioritized ports those of `set`'s `-Q` lines: the others are removed, a
/// queue whose number of classes changes is made again.
fn restore_prios(c: &mut Client, set: &RuleSet) -> anyhow::Result<()> {
    drop_prios(c, set)?;
    for (port, s) in &set.prios {
        c.set_prio(*port, s)
            .with_context(|| format!("prioritized port {port}"))?;
    }
    Ok(())
}

/// Deletes the prioritized queues `set` does not have, or has with another number of
/// classes.
fn drop_prios(c: &mut Client, set: &RuleSet) -> anyhow::Result<()> {
    let have = c.prios(None)?;
    for old in &have {
        let keep = set.prios.iter().find(|(p, _)| *p == old.port);
        // The number of classes is fixed at creation: a queue with another number is
        // made again.
        if keep.is_none_or(|(_, s)| {
            s.classes
                .is_some_and(|n| usize::from(n) != old.classes.len())
        }) {
            c.delete_prio(old.port)
                .with_context(|| format!("prioritized port {}", old.port))?;
        }
    }
    Ok(())
}

fn print_prio(p: &openqos::PrioPort) {
    println!(
        "prio {} classes {} cap {} depth {}{}",
        p.port,
        p.classes.len(),
        p.cap,
        p.depth,
        if p.early_refuse { " early-refuse" } else { "" }
    );
    for c in &p.classes {
        let dl = c
            .deadline_ms
            .map_or("none".to_owned(), |ms| format!("{ms}ms"));
        println!(
            "  class {} deadline {dl}: waiting {} admitted {} released {} pushed-out {} expired {} refused {} lost {}",
            c.class, c.waiting, c.admitted, c.released, c.pushed_out, c.expired, c.refused, c.lost
        );
    }
}

fn print_rule(r: &openqos::Rule) {
    let s = &r.stats;
    let mut opts = String::new();
    for (name, ms) in rule_options(r) {
        opts += &format!(" {name}");
        if let Some(ms) = ms {
            opts += &format!(" {ms}ms");
        }
    }
    println!(
        "rule {} type {}{} default {}: forwarded {} default-hits {} waiting {} refused no-listener {} queue-full {} family {} other {}",
        r.port,
        r.kind.letter(),
        opts,
        r.default_port,
        s.forwarded,
        s.default_hits,
        s.waiting,
        s.no_listener,
        s.queue_full,
        s.family_mismatch,
        s.other_refused
    );
    if r.data_timeout_ms.is_some() {
        println!(
            "  data: timed-out {} pending-full {} scanned {} bytes in {} looks, automaton {} states",
            s.timed_out,
            s.pending_full,
            s.scanned,
            s.looks,
            r.automaton_states.unwrap_or(0)
        );
    }
    for c in &r.conditions {
        println!(
            "  {:>4}  {:<40} -> {:<5}  hits {}",
            c.index,
            c.matcher.to_string(),
            c.out_port,
            c.hits
        );
    }
}

fn main() -> ExitCode {
    openqos::version_flag("tcpchains", env!("CARGO_PKG_VERSION"));
    openqos::completions_flag::<Cli>("tcpchains");
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcpchains: {e:#}");
            let code = match e.downcast_ref::<Error>() {
                Some(Error::ModuleNotLoaded) => exit::NOT_LOADED,
                Some(Error::AbiMismatch { .. }) => exit::ABI,
                Some(Error::OutOfRange { .. }) => exit::USAGE,
                Some(err) => match err.errno() {
                    Some(1) | Some(13) => exit::PERMISSION,
                    Some(2) => exit::NOT_FOUND,
                    Some(17) => exit::EXISTS,
                    Some(22) => exit::USAGE,
                    _ => exit::FAILURE,
                },
                None => exit::USAGE,
            };
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_commands_parse() {
        let c = Cli::try_parse_from(["tcpchains", "-A", "a", "-p", "21", "-o", "1021"]).unwrap();
        assert_eq!(
            (c.new_rule, c.port, c.default),
            (Some(RuleType::Address), Some(21), Some(1021))
        );
        let c = Cli::try_parse_from([
            "tcpchains",
            "-a",
            "a",
            "-p",
            "21",
            "-i",
            "128.143.0.0",
            "-m",
            "255.255.0.0",
            "-r",
            "2021",
        ])
        .unwrap();
        assert_eq!(c.to, Some(2021));
        let m = matcher(c.address.as_deref().unwrap(), c.mask.as_deref()).unwrap();
        assert_eq!(
            m,
            Matcher::Ipv4 {
                addr: "128.143.0.0".parse().unwrap(),
                mask: "255.255.0.0".parse().unwrap()
            }
        );
        assert!(Cli::try_parse_from([
            "tcpchains",
            "-a",
            "c",
            "-p",
            "80",
            "-s",
            "www.foo.com",
            "-r",
            "8081"
        ])
        .is_ok());
        assert!(Cli::try_parse_from([
            "tcpchains",
            "-a",
            "d",
            "-p",
            "80",
            "-r",
            "8081",
            "-c",
            "3000"
        ])
        .is_ok());
    }

    #[test]
    fn content_options_parse() {
        let c = Cli::try_parse_from([
            "tcpchains",
            "-A",
            "c",
            "-p",
            "80",
            "-o",
            "8080",
            "--nocase",
            "--timeout",
            "500",
        ])
        .unwrap();
        assert_eq!(
            (c.new_rule, c.nocase, c.timeout),
            (Some(RuleType::Content), true, Some(500))
        );
        assert_eq!(
            Matcher::Content {
                pattern: "Host: a\tb".into()
            }
            .to_string(),
            "string Host: a\\tb"
        );
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(Cli::try_parse_from(["tcpchains", "-A", "a", "-p", "0", "-o", "1021"]).is_err());
        assert!(
            Cli::try_parse_from(["tcpchains", "-A", "a", "-p", "65536", "-o", "1021"]).is_err()
        );
        assert!(Cli::try_parse_from(["tcpchains", "-A", "x", "-p", "21", "-o", "1021"]).is_err());
        assert!(Cli::try_parse_from(["tcpchains", "-p", "21"]).is_err());
        assert!(Cli::try_parse_from(["tcpchains", "-L", "-F"]).is_err());
        assert!(matcher("128.143.0.300", Some("255.255.0.0")).is_err());
        assert!(matcher("128.143.0.0", Some("255.255.0.x")).is_err());
        assert!(matcher("128.143.0.0", Some("33")).is_err());
        assert!(matcher("2001:db8::/129", None).is_err());
        assert!(matcher("10.0.0.0/8", Some("8")).is_err());
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            matcher("10.0.0.0/8", None).unwrap(),
            Matcher::Ipv4 {
                addr: "10.0.0.0".parse().unwrap(),
                mask: "255.0.0.0".parse().unwrap()
            }
        );
        assert_eq!(
            matcher("2001:db8::", Some("32")).unwrap(),
            Matcher::Ipv6 {
                addr: "2001:db8::".parse().unwrap(),
                prefix: 32
            }
        );
        assert_eq!(
            matcher("127.0.0.2", None).unwrap(),
            Matcher::Ipv4 {
                addr: "127.0.0.2".parse().unwrap(),
                mask: "255.255.255.255".parse().unwrap()
            }
        );
    }

    fn rule(port: u16, kind: RuleType, conditions: Vec<(Matcher, u16, u64)>) -> openqos::Rule {
        openqos::Rule {
            port,
            kind,
            default_port: 8080,
            default_prio: (port == 21).then_some(2),
            dual_stack: port == 81,
            nocase: kind == RuleType::Content,
            data_timeout_ms: (kind == RuleType::Content).then_some(1500),
            automaton_states: None,
            conditions: conditions
                .into_iter()
                .enumerate()
                .map(|(i, (matcher, out_port, hits))| openqos::Condition {
                    index: i as u32 + 1,
                    matcher,
                    out_port,
                    prio: (out_port == 2021).then_some(0),
                    hits,
                })
                .collect(),
            stats: Default::default(),
        }
    }

    #[test]
    fn save_restore_round_trip() {
        let rules = vec![
            rule(
                21,
                RuleType::Address,
                vec![
                    (
                        matcher("128.143.0.0", Some("255.255.0.0")).unwrap(),
                        2021,
                        5,
                    ),
                    (matcher("10.1.0.0", Some("255.0.255.0")).unwrap(), 2022, 0),
                    (matcher("2001:db8::/32", None).unwrap(), 2023, 0),
                ],
            ),
            rule(
                80,
                RuleType::Content,
                vec![
                    (
                        Matcher::Content {
                            pattern: "www.foo.com".into(),
                        },
                        8081,
                        0,
                    ),
                    (
                        Matcher::Content {
                            pattern: "it's \"quoted\" #not a comment".into(),
                        },
                        8082,
                        0,
                    ),
                    (
                        Matcher::Content {
                            pattern: "\r\nHost: a\\b\x01".into(),
                        },
                        8083,
                        0,
                    ),
                ],
            ),
            rule(
                81,
                RuleType::Probabilistic,
                vec![(Matcher::Weight { weight: 3000 }, 8081, 7)],
            ),
        ];
        let prios = vec![openqos::PrioPort {
            port: 8080,
            cap: 64,
            depth: 1,
            early_refuse: true,
            classes: (0..3)
                .map(|c| openqos::PrioClass {
                    class: c,
                    deadline_ms: (c != 1).then_some(500 * (u32::from(c) + 1)),
                    waiting: 0,
                    admitted: 0,
                    released: 0,
                    pushed_out: 0,
                    expired: 0,
                    refused: 0,
                    delay_ns: 0,
                    lost: 0,
                    hist: vec![],
                })
                .collect(),
        }];
        let text = save(&prios, &rules);
        let back = parse_rule_set(&text).unwrap();
        let want: Vec<RuleConfig> = rules.iter().map(openqos::Rule::config).collect();
        assert_eq!(back.rules, want, "{text}");
        let mut s = prios[0].settings();
        // Classes without a deadline are not saved: none is what a new queue has.
        s.deadlines.retain(|(_, d)| d.is_some());
        assert_eq!(back.prios, vec![(8080, s)], "{text}");
        assert!(
            text.contains("-Q 8080 --classes 3 --cap 64 --depth 1 --deadline 0:500 --deadline 2:1500 --early-refuse on"),
            "{text}"
        );
        assert!(text.contains("-A a -p 21 -o 8080 --prio 2"), "{text}");
        assert!(text.contains("-r 2021 --prio 0"), "{text}");
        assert!(
            text.contains("-a a -p 21 -i 128.143.0.0/16 -r 2021"),
            "{text}"
        );
        assert!(
            text.contains("-A c -p 80 -o 8080 --nocase --timeout 1500"),
            "{text}"
        );
    }

    #[test]
    fn bad_rule_sets_name_the_line() {
        for (text, want) in [
            ("-a a -p 21 -i 10.0.0.0/8 -r 2021", "line 1: no -A rule"),
            (
                "-A a -p 21 -o 1021\n-A d -p 21 -o 1021",
                "line 2: a second rule",
            ),
            (
                "# c\n-A a -p 21 -o 1021\n-a d -p 21 -c 5 -r 2",
                "line 3: the rule on port 21",
            ),
            ("-F", "line 1: a rule set holds only"),
            (
                "-A a -p 21 -o 1021\n-a a -p 21 -i 10.0.0.0/8 -r 2 -R 1",
                "line 2: a rule set",
            ),
            ("-A a -p 21 -o 'x", "line 1: unbalanced quotes"),
            ("-A q -p 21 -o 1021", "line 1: error: invalid value 'q'"),
            ("-A a -p 21 -o 1021 --nocase", "line 1: --nocase"),
            ("-Q 8080\n-Q 8080 --cap 3", "line 2: a second -Q line"),
            ("-Q 8080 --prio 1", "line 1: --prio is an option"),
            (
                "-Q 8080 --deadline 9:100",
                "line 1: error: invalid value '9:100'",
            ),
            (
                "-Q 8080 --deadline 1:0",
                "line 1: error: invalid value '1:0'",
            ),
        ] {
            let e = format!("{:#}", parse_rule_set(text).unwrap_err());
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
        assert_eq!(parse_rule_set("\n# nothing\n").unwrap(), RuleSet::default());
    }

    #[test]
    fn escapes() {
        assert_eq!(
            unescape("\\r\\nHost: x\\t\\\\\\x41").unwrap(),
            "\r\nHost: x\t\\A"
        );
        assert!(unescape("\\x00").is_err());
        assert!(unescape("\\xff").is_err());
        assert!(unescape("\\q").is_err());
        assert!(unescape("\\").is_err());
        assert_eq!(escape("plain"), None);
        let s = "a\r\n\\\x7f";
        assert_eq!(unescape(&escape(s).unwrap()).unwrap(), s);
    }
}
