// SPDX-License-Identifier: GPL-2.0

//! `tcpchains`: manage openqos classification rules.
//!
//! The syntax of the paper works verbatim:
//!
//! ```text
//! tcpchains -A a -p 21 -o 1021
//! tcpchains -a a -p 21 -i 128.143.0.0 -m 255.255.0.0 -r 2021
//! ```

use anyhow::{bail, Context};
use clap::{ArgGroup, Parser};
use openqos::{Client, Error, Matcher, RuleConfig, RuleOptions, RuleType};
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
        tcpchains -S > rules.txt\n  tcpchains --restore rules.txt",
    group(ArgGroup::new("action").required(true)
        .args(["new_rule", "add", "list", "delete_rule", "delete", "flush", "save", "restore"]))
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
    /// With --restore: only check the rule set (the kernel validates it; nothing changes).
    #[arg(long, requires = "restore")]
    test: bool,

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
    if let Some(path) = &cli.restore {
        let set = read_rule_set(path)?;
        return restore(&set, cli.test);
    }
    let mut c = Client::connect()?;
    if let Some((port, default, kind, opts)) = rule_of(cli)? {
        c.create_rule(port, kind, default, &opts)?;
    } else if cli.add.is_some() {
        let (port, m, to) = condition_of(cli)?;
        c.set_condition(port, cli.replace, m, to)?;
    } else if cli.list {
        let rules = c.rules(cli.port)?;
        if cli.json {
            println!("{}", serde_json::to_string_pretty(&rules)?);
        } else {
            for r in &rules {
                print_rule(r);
            }
        }
    } else if cli.delete_rule {
        c.delete_rule(need(cli.port, "-p PORT")?)?;
    } else if let Some(i) = cli.delete {
        c.delete_condition(need(cli.port, "-p PORT")?, i)?;
    } else if cli.flush {
        c.flush()?;
    } else if cli.save {
        print!("{}", save(&c.rules(None)?));
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

/// The rule set as tcpchains arguments, one rule or condition per line.
fn save(rules: &[openqos::Rule]) -> String {
    let mut out =
        String::from("# openqos rule set (tcpchains -S); apply with: tcpchains --restore FILE\n");
    for r in rules {
        let t = r.kind.letter();
        out += &format!("-A {t} -p {} -o {}", r.port, r.default_port);
        for (name, ms) in rule_options(r) {
            out += &format!(" --{name}");
            if let Some(ms) = ms {
                out += &format!(" {ms}");
            }
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
            out += &format!("-a {t} -p {} {m} -r {}\n", r.port, c.out_port);
        }
    }
    out
}

/// Parses a rule set: lines of `-A` and `-a` arguments, `#` comments.
fn parse_rule_set(text: &str) -> anyhow::Result<Vec<RuleConfig>> {
    let mut set: Vec<RuleConfig> = Vec::new();
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
        if let Some((port, default_port, kind, opts)) = rule_of(&cli).map_err(at)? {
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
            r.conditions.push((m, to));
        } else {
            bail!("line {n}: a rule set holds only -A (rule) and -a (condition) lines");
        }
    }
    Ok(set)
}

fn read_rule_set(path: &str) -> anyhow::Result<Vec<RuleConfig>> {
    let text = if path == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?
    };
    parse_rule_set(&text).with_context(|| path.to_owned())
}

fn restore(set: &[RuleConfig], test: bool) -> anyhow::Result<()> {
    let mut c = Client::connect()?;
    c.replace_rules(set, test).map_err(|e| {
        let ctx = match &e {
            Error::InRule { index, .. } => format!("rule on port {}", set[*index].port),
            _ => "rule set".into(),
        };
        anyhow::Error::new(e).context(ctx)
    })
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
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcpchains: {e:#}");
            let code = match e.downcast_ref::<Error>() {
                Some(Error::ModuleNotLoaded) => exit::NOT_LOADED,
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
        let text = save(&rules);
        let back = parse_rule_set(&text).unwrap();
        let want: Vec<RuleConfig> = rules.iter().map(openqos::Rule::config).collect();
        assert_eq!(back, want, "{text}");
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
        ] {
            let e = format!("{:#}", parse_rule_set(text).unwrap_err());
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
        assert_eq!(parse_rule_set("\n# nothing\n").unwrap(), vec![]);
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
