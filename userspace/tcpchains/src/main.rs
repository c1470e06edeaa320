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
use openqos::{Client, Error, Matcher, RuleOptions, RuleType};
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
        tcpchains -L\n  tcpchains -d 1 -p 21\n  tcpchains -D -p 21\n  tcpchains -F",
    group(ArgGroup::new("action").required(true)
        .args(["new_rule", "add", "list", "delete_rule", "delete", "flush"]))
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

fn run(cli: &Cli) -> anyhow::Result<()> {
    if cli.new_rule != Some(RuleType::Content) && (cli.nocase || cli.timeout.is_some()) {
        bail!("--nocase and --timeout are options of content rules (-A c)");
    }
    let mut c = Client::connect()?;
    if let Some(kind) = cli.new_rule {
        let port = need(cli.port, "-p PORT (incoming port)")?;
        let default = need(cli.default, "-o PORT (default outgoing port)")?;
        let opts = RuleOptions {
            dual_stack: cli.dual_stack,
            nocase: cli.nocase,
            data_timeout_ms: cli.timeout,
        };
        c.create_rule(port, kind, default, &opts)?;
    } else if let Some(kind) = cli.add {
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
            RuleType::Content => Matcher::Content {
                pattern: need(cli.string.clone(), "-s STRING")?,
            },
        };
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
    }
    Ok(())
}

fn print_rule(r: &openqos::Rule) {
    let s = &r.stats;
    let mut opts = String::new();
    if r.dual_stack {
        opts += " dual-stack";
    }
    if r.nocase {
        opts += " nocase";
    }
    if let Some(t) = r.data_timeout_ms {
        opts += &format!(" timeout {t}ms");
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
            "  data: timed-out {} pending-full {} automaton {} states",
            s.timed_out,
            s.pending_full,
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
}
