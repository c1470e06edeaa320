// SPDX-License-Identifier: GPL-2.0

//! skex: the actuators of openqos.
//!
//! Socket groups give classes of connections different service: an accept-ratio group
//! shares `accept()` across its listening ports by weight, an accept-rate group caps the
//! connections its ports accept per second, an output group caps the bytes per second
//! that every connection accepted from its ports sends together. Settings change live.
//! Listing needs no privilege and shows the caller's network namespace only; every
//! change needs CAP_NET_ADMIN.

use anyhow::{bail, Context, Result};
use clap::Parser;
use openqos::{abi::abi::limits, Client, Group, GroupSettings, GroupType};
use std::io::Write;

#[derive(Parser, Debug)]
#[command(
    name = "skex",
    version,
    about = "Configure the openqos socket groups (accept ratio, accept rate, output bandwidth)",
    after_help = "Examples:\n  \
        skex -N 1 -t output -r 100K --ftp     # restricted FTP class: 100 KiB/s in all\n  \
        skex -a 1 -p 2021                     # ... for connections accepted on 2021\n  \
        skex -a 4 -p 2021 --ftp               # or: only 2021 is an FTP control port\n  \
        skex -N 2 -t rate -r 50               # at most 50 accepts per second\n  \
        skex -N 3 -t ratio                    # share accepts 1:3 between two ports\n  \
        skex -a 3 -p 8080 -w 1; skex -a 3 -p 8081 -w 3\n  \
        skex -s 1 -r 200K                     # change a limit live\n  \
        skex -s 2 -r 5 --lease 6s             # 5/s for 6 s unless renewed, then back\n  \
        skex -L -j                            # everything, as JSON\n\
        See skex(8)."
)]
struct Args {
    /// Create group ID (with -t; -r for rate and output groups).
    #[arg(short = 'N', long = "new", value_name = "ID", group = "verb")]
    new: Option<u32>,
    /// Delete group ID (its ports leave it; callers held back resume).
    #[arg(short = 'X', long = "delete", value_name = "ID", group = "verb")]
    delete: Option<u32>,
    /// Attach port -p to group ID (-w: its weight in a ratio group; --ftp: as an FTP
    /// control port).
    #[arg(short = 'a', long = "attach", value_name = "ID", group = "verb")]
    attach: Option<u32>,
    /// Detach port -p from group ID.
    #[arg(short = 'd', long = "detach", value_name = "ID", group = "verb")]
    detach: Option<u32>,
    /// Change group ID live: -r, -b, --ftp/--no-ftp, or -p with -w.
    #[arg(short = 's', long = "set", value_name = "ID", group = "verb")]
    set: Option<u32>,
    /// List the groups (all, or -g ID), with quota use and held-back callers.
    #[arg(short = 'L', long = "list", group = "verb")]
    list: bool,
    /// With -L: this group only.
    #[arg(short = 'g', long = "group", value_name = "ID", requires = "list")]
    group: Option<u32>,
    /// Group type: ratio, rate or output.
    #[arg(short = 't', long = "type", value_name = "TYPE")]
    kind: Option<GroupType>,
    /// Rate: connections/s (rate groups) or bytes/s (output groups; suffixes K, M, G =
    /// 1024, 1024^2, 1024^3).
    #[arg(short = 'r', long = "rate", value_name = "RATE", value_parser = parse_amount)]
    rate: Option<u64>,
    /// Burst: most connections (rate) or bytes (output) at once; suffixes as for -r.
    #[arg(short = 'b', long = "burst", value_name = "BURST", value_parser = parse_amount)]
    burst: Option<u64>,
    /// Listening port to attach, detach or weigh.
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    port: Option<u16>,
    /// Weight of the port in an accept-ratio group (1..10000).
    #[arg(short = 'w', long = "weight", value_name = "WEIGHT")]
    weight: Option<u16>,
    /// FTP: data ports announced in PASV/EPSV replies join the group (-N, -s: every
    /// member port is an FTP control port; -a: this port is one).
    #[arg(long = "ftp", conflicts_with = "no_ftp")]
    ftp: bool,
    /// Stop watching FTP replies.
    #[arg(long = "no-ftp")]
    no_ftp: bool,
    /// With -s: the rate and burst hold only this long (e.g. 6s, 500ms; 100ms to 1h)
    /// unless renewed by another -s with --lease; then the kernel puts back the
    /// setting from before the first leased change.
    #[arg(long = "lease", value_name = "DURATION", value_parser = parse_lease)]
    lease: Option<u32>,
    /// Print JSON (with -L).
    #[arg(short = 'j', long = "json")]
    json: bool,
}

/// `100`, `100K`, `1.5M`: a count, with binary suffixes.
fn parse_amount(s: &str) -> std::result::Result<u64, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&s[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a number (suffixes: K, M, G)"))?;
    let total = v * mult as f64;
    if !(1.0..=1e10).contains(&total) || total.fract() != 0.0 && mult == 1 {
        return Err(format!("{s:?} must be a whole number from 1 to 10^10"));
    }
    Ok(total.round() as u64)
}

/// `6s`, `500ms`, `1m`: a lease, in milliseconds.
fn parse_lease(s: &str) -> std::result::Result<u32, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (e.g. 6s, 500ms)"))?;
    let (lo, hi) = (limits::MIN_LEASE_MS, limits::MAX_LEASE_MS);
    u32::try_from(d.as_millis())
        .ok()
        .filter(|ms| (lo..=hi).contains(ms))
        .ok_or_else(|| format!("{s:?}: a lease is from {lo} ms to {} h", hi / 3_600_000))
}

fn settings(args: &Args) -> GroupSettings {
    GroupSettings {
        rate: args.rate,
        burst: args.burst,
        ftp: match (args.ftp, args.no_ftp) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        lease_ms: args.lease,
    }
}

fn need_port(args: &Args, verb: &str) -> Result<u16> {
    args.port
        .with_context(|| format!("{verb} needs the listening port (-p PORT)"))
}

fn amount(kind: GroupType, v: u64) -> String {
    match kind {
        GroupType::Output => format!("{v} B/s"),
        _ => format!("{v}/s"),
    }
}

fn print_groups(out: &mut impl Write, groups: &[Group]) -> Result<()> {
    for g in groups {
        write!(out, "group {} type {}", g.id, g.kind.name())?;
        if let (Some(r), Some(b)) = (g.rate, g.burst) {
            write!(
                out,
                " rate {} burst {} tokens {}",
                amount(g.kind, r),
                b,
                g.tokens
            )?;
        }
        if g.ftp {
            write!(out, " ftp")?;
        }
        if let (Some(ms), Some(r)) = (g.lease_ms, g.fallback_rate) {
            write!(
                out,
                " leased ({}.{:03} s left, then {})",
                ms / 1000,
                ms % 1000,
                amount(g.kind, r)
            )?;
        }
        if g.lease_expired > 0 {
            write!(out, " leases-expired {}", g.lease_expired)?;
        }
        writeln!(
            out,
            ": admitted {} held {} sleeping {} timer-runs {}{}",
            g.admitted,
            g.held,
            g.sleeping,
            g.timer_runs,
            if g.ftp || g.members.iter().any(|m| m.ftp) {
                format!(" ftp-joined {}", g.ftp_joined)
            } else {
                String::new()
            }
        )?;
        for m in &g.members {
            write!(out, "    port {:>5}", m.port)?;
            if m.ftp {
                write!(out, "  ftp")?;
            }
            if g.kind == GroupType::Ratio {
                write!(out, "  weight {:>5}", m.weight)?;
            }
            writeln!(
                out,
                "  {} {}",
                if g.kind == GroupType::Output {
                    "bytes"
                } else {
                    "accepted"
                },
                m.admitted
            )?;
        }
    }
    Ok(())
}

/// Checks what the parser cannot: a lease is for a change (-s) only.
fn check_args(args: &Args) -> Result<()> {
    if args.lease.is_some() && args.set.is_none() {
        bail!("--lease goes with -s (a change of the rate or burst)");
    }
    Ok(())
}

fn run(args: &Args) -> Result<()> {
    check_args(args)?;
    let mut c = Client::connect().context("cannot talk to the openqos module")?;
    if let Some(id) = args.new {
        let kind = args
            .kind
            .context("a new group needs its type (-t ratio|rate|output)")?;
        if kind != GroupType::Ratio && args.rate.is_none() {
            bail!("a {} group needs its rate (-r)", kind.name());
        }
        return c
            .create_group(id, kind, &settings(args))
            .with_context(|| format!("cannot create group {id}"));
    }
    if let Some(id) = args.delete {
        return c
            .delete_group(id)
            .with_context(|| format!("cannot delete group {id}"));
    }
    if let Some(id) = args.attach {
        let port = need_port(args, "-a")?;
        if args.no_ftp {
            bail!("-a takes --ftp (an FTP control port) but not --no-ftp");
        }
        return c
            .add_group_port(id, port, args.weight, args.ftp)
            .with_context(|| format!("cannot attach port {port} to group {id}"));
    }
    if let Some(id) = args.detach {
        let port = need_port(args, "-d")?;
        return c
            .delete_group_port(id, port)
            .with_context(|| format!("cannot detach port {port} from group {id}"));
    }
    if let Some(id) = args.set {
        let s = settings(args);
        match (args.port, args.weight) {
            (Some(p), Some(w)) => c
                .set_group_weight(id, p, w)
                .with_context(|| format!("cannot weigh port {p} in group {id}"))?,
            (None, None) => {}
            _ => bail!("-s changes a port's weight with both -p and -w"),
        }
        if s != GroupSettings::default() {
            c.set_group(id, &s)
                .with_context(|| format!("cannot change group {id}"))?;
        } else if args.port.is_none() {
            bail!("-s needs something to change (-r, -b, --lease, --ftp, --no-ftp, or -p with -w)");
        }
        return Ok(());
    }
    let groups = c.groups(args.group)?;
    let out = &mut std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &serde_json::json!({ "groups": groups }))?;
        writeln!(out)?;
    } else {
        print_groups(out, &groups)?;
    }
    Ok(())
}

fn main() {
    openqos::version_flag("skex", env!("CARGO_PKG_VERSION"));
    openqos::completions_flag::<Args>("skex");
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("skex: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openqos::GroupMember;

    #[test]
    fn amounts_take_binary_suffixes() {
        assert_eq!(parse_amount("100"), Ok(100));
        assert_eq!(parse_amount("100K"), Ok(102_400));
        assert_eq!(parse_amount("1.5M"), Ok(1_572_864));
        assert_eq!(parse_amount("2g"), Ok(2 << 30));
        assert!(parse_amount("0").is_err());
        assert!(parse_amount("1.5").is_err());
        assert!(parse_amount("lots").is_err());
        assert!(parse_amount("99G").is_err());
    }

    #[test]
    fn the_papers_ftp_example_parses() {
        let a = Args::try_parse_from(["skex", "-N", "1", "-t", "output", "-r", "100K", "--ftp"])
            .unwrap();
        assert_eq!(a.new, Some(1));
        assert_eq!(a.kind, Some(GroupType::Output));
        assert_eq!(settings(&a).rate, Some(102_400));
        assert_eq!(settings(&a).ftp, Some(true));
        // A member marked as an FTP control port.
        let a = Args::try_parse_from(["skex", "-a", "4", "-p", "2021", "--ftp"]).unwrap();
        assert_eq!((a.attach, a.port, a.ftp), (Some(4), Some(2021), true));
        // Two verbs at once are refused.
        assert!(Args::try_parse_from(["skex", "-N", "1", "-X", "1"]).is_err());
    }

    #[test]
    fn listing_shows_members() {
        let g = Group {
            id: 3,
            kind: GroupType::Ratio,
            rate: None,
            burst: None,
            ftp: false,
            members: vec![
                GroupMember {
                    port: 8080,
                    weight: 1,
                    admitted: 10,
                    ftp: false,
                },
                GroupMember {
                    port: 8081,
                    weight: 3,
                    admitted: 30,
                    ftp: false,
                },
            ],
            admitted: 40,
            held: 5,
            sleeping: 1,
            tokens: 0,
            ftp_joined: 0,
            timer_runs: 2,
            lease_ms: None,
            fallback_rate: None,
            lease_expired: 0,
        };
        let mut out = Vec::new();
        print_groups(&mut out, &[g]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("group 3 type ratio: admitted 40 held 5"));
        assert!(text.contains("port  8081  weight     3  accepted 30"));
    }

    #[test]
    fn leases() {
        let a = Args::try_parse_from(["skex", "-s", "2", "-r", "5", "--lease", "6s"]).unwrap();
        assert_eq!((a.set, a.rate, a.lease), (Some(2), Some(5), Some(6000)));
        let a = Args::try_parse_from(["skex", "-s", "2", "--lease", "1m 500ms"]).unwrap();
        assert_eq!(a.lease, Some(60_500));
        // Out of range, no unit, or without -s.
        for bad in ["50ms", "2h", "6"] {
            assert!(
                Args::try_parse_from(["skex", "-s", "2", "--lease", bad]).is_err(),
                "{bad}"
            );
        }
        let a = Args::try_parse_from(["skex", "-N", "2", "-t", "rate", "-r", "5", "--lease", "6s"])
            .unwrap();
        assert!(check_args(&a).is_err());
        let g = Group {
            id: 2,
            kind: GroupType::Rate,
            rate: Some(5),
            burst: Some(1),
            ftp: false,
            members: vec![],
            admitted: 0,
            held: 0,
            sleeping: 0,
            tokens: 1,
            ftp_joined: 0,
            timer_runs: 0,
            lease_ms: Some(4250),
            fallback_rate: Some(100),
            lease_expired: 3,
        };
        let mut out = Vec::new();
        print_groups(&mut out, &[g]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "rate 5/s burst 1 tokens 1 leased (4.250 s left, then 100/s) leases-expired 3"
            ),
            "{text}"
        );
    }
}
