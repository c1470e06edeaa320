// SPDX-License-Identifier: GPL-2.0

//! netmeter: the sensors of openqos.
//!
//! Shows, per metered listening port, the connections waiting in its accept queues, the
//! connections accepted, their queueing delay (mean and percentiles) and the bytes the
//! servers exchanged on them; once, or every interval as rates (like `vmstat`). Reading
//! needs no privilege and shows the caller's network namespace only.

mod prom;

use anyhow::{bail, Context, Result};
use clap::Parser;
use openqos::{Client, Meter, PrioPort};
use serde::Serialize;
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    name = "netmeter",
    version,
    about = "Read the openqos sensors of listening ports",
    after_help = "Ports a rule sends to are metered from the rule's creation on; \
                  -A meters any other listening port. See netmeter(8)."
)]
struct Args {
    /// Show this port only.
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    port: Option<u16>,
    /// Print JSON (one object; in watch mode one object per line and interval).
    #[arg(short = 'j', long = "json")]
    json: bool,
    /// Watch: print rates every SECONDS (fractions allowed) until interrupted.
    #[arg(short = 'i', long = "interval", value_name = "SECONDS")]
    interval: Option<f64>,
    /// Watch: stop after COUNT intervals.
    #[arg(
        short = 'c',
        long = "count",
        value_name = "COUNT",
        requires = "interval"
    )]
    count: Option<u64>,
    /// Meter PORT (needs CAP_NET_ADMIN).
    #[arg(short = 'A', long = "add", value_name = "PORT", conflicts_with_all = ["delete", "interval"])]
    add: Option<u16>,
    /// Show the prioritized queues (tcpchains -Q) instead, one row per class: what it
    /// holds, what went to the server and after how long, what was pushed out, expired
    /// or refused.
    #[arg(short = 'Q', long = "prio", conflicts_with_all = ["add", "delete"])]
    prio: bool,
    /// Write every openqos counter (meters, rules, groups, prioritized queues) in the
    /// Prometheus text format to FILE (atomically: node_exporter's textfile collector
    /// reads it), or to standard output without FILE; with -i, every interval.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-",
          conflicts_with_all = ["add", "delete", "prio", "json", "port"])]
    prometheus: Option<String>,
    /// Stop metering PORT and forget its counters (needs CAP_NET_ADMIN).
    #[arg(
        short = 'D',
        long = "delete",
        value_name = "PORT",
        conflicts_with = "interval"
    )]
    delete: Option<u16>,
}

/// One port's readings as printed.
#[derive(Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    meter: &'a Meter,
    mean_delay_us: Option<u64>,
    p50_delay_us: Option<u64>,
    p90_delay_us: Option<u64>,
    p99_delay_us: Option<u64>,
}

impl<'a> Row<'a> {
    fn of(meter: &'a Meter) -> Self {
        Row {
            meter,
            mean_delay_us: meter.mean_delay_us(),
            p50_delay_us: meter.delay_quantile_us(500),
            p90_delay_us: meter.delay_quantile_us(900),
            p99_delay_us: meter.delay_quantile_us(990),
        }
    }
}

/// A port's rates over one watch interval.
#[derive(Serialize)]
struct Rate {
    port: u16,
    waiting: u64,
    open: u64,
    accepted: u64,
    accepts_per_s: f64,
    mean_delay_us: Option<u64>,
    rx_bytes_per_s: f64,
    tx_bytes_per_s: f64,
}

fn ms(us: Option<u64>) -> String {
    us.map_or("-".into(), |u| format!("{:.1}", u as f64 / 1000.0))
}

fn flags(m: &Meter) -> String {
    let why: Vec<&str> = [
        (m.auto, "rule"),
        (m.requested, "req"),
        (m.grouped, "group"),
        (m.prio, "prio"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    if why.is_empty() {
        "-".into()
    } else {
        why.join(",")
    }
}

fn print_table(out: &mut impl Write, meters: &[Meter]) -> Result<()> {
    writeln!(
        out,
        " PORT  WAITING OLDEST_MS   ACCEPTED   OPEN  DELAY_MS    P50_MS    P90_MS    P99_MS       RX_BYTES       TX_BYTES  LSN WHY"
    )?;
    for m in meters {
        let r = Row::of(m);
        writeln!(
            out,
            "{:>5} {:>8} {:>9} {:>10} {:>6} {:>9} {:>9} {:>9} {:>9} {:>14} {:>14} {:>4} {}",
            m.port,
            m.waiting,
            ms(Some(m.oldest_ns / 1000)),
            m.accepted,
            m.open,
            ms(r.mean_delay_us),
            ms(r.p50_delay_us),
            ms(r.p90_delay_us),
            ms(r.p99_delay_us),
            m.rx_bytes,
            m.tx_bytes,
            m.listeners,
            flags(m)
        )?;
    }
    Ok(())
}

/// One class of a prioritized port as printed.
#[derive(Serialize)]
struct ClassRow<'a> {
    #[serde(flatten)]
    class: &'a openqos::PrioClass,
    mean_delay_us: Option<u64>,
    p50_delay_us: Option<u64>,
    p90_delay_us: Option<u64>,
    p99_delay_us: Option<u64>,
}

/// A prioritized port as printed.
#[derive(Serialize)]
struct PrioRow<'a> {
    port: u16,
    cap: u32,
    depth: u32,
    early_refuse: bool,
    classes: Vec<ClassRow<'a>>,
}

fn prio_rows(prios: &[PrioPort]) -> Vec<PrioRow<'_>> {
    prios
        .iter()
        .map(|p| PrioRow {
            port: p.port,
            cap: p.cap,
            depth: p.depth,
            early_refuse: p.early_refuse,
            classes: p
                .classes
                .iter()
                .map(|c| ClassRow {
                    class: c,
                    mean_delay_us: c.mean_delay_us(),
                    p50_delay_us: c.delay_quantile_us(500),
                    p90_delay_us: c.delay_quantile_us(900),
                    p99_delay_us: c.delay_quantile_us(990),
                })
                .collect(),
        })
        .collect()
}

fn print_prio_table(out: &mut impl Write, prios: &[PrioPort]) -> Result<()> {
    writeln!(
        out,
        " PORT CLASS DEADLINE_MS  WAITING   ADMITTED   RELEASED PUSHED_OUT  EXPIRED  REFUSED  DELAY_MS    P50_MS    P99_MS"
    )?;
    for p in prio_rows(prios) {
        for c in &p.classes {
            writeln!(
                out,
                "{:>5} {:>5} {:>11} {:>8} {:>10} {:>10} {:>10} {:>8} {:>8} {:>9} {:>9} {:>9}",
                p.port,
                c.class.class,
                c.class
                    .deadline_ms
                    .map_or("-".to_owned(), |d| d.to_string()),
                c.class.waiting,
                c.class.admitted,
                c.class.released,
                c.class.pushed_out,
                c.class.expired,
                c.class.refused,
                ms(c.mean_delay_us),
                ms(c.p50_delay_us),
                ms(c.p99_delay_us),
            )?;
        }
    }
    Ok(())
}

/// A class's rates over one watch interval.
#[derive(Serialize, Debug, PartialEq)]
struct ClassRate {
    port: u16,
    class: u8,
    waiting: u64,
    released_per_s: f64,
    mean_delay_us: Option<u64>,
    pushed_out: u64,
    expired: u64,
    refused: u64,
}

fn class_rates(before: &[PrioPort], now: &[PrioPort], secs: f64) -> Vec<ClassRate> {
    let mut out = Vec::new();
    for p in now {
        for c in &p.classes {
            let b = before
                .iter()
                .find(|b| b.port == p.port)
                .and_then(|b| b.classes.iter().find(|x| x.class == c.class));
            let d = |f: fn(&openqos::PrioClass) -> u64| f(c).saturating_sub(b.map_or(0, f));
            let rel = d(|x| x.released);
            out.push(ClassRate {
                port: p.port,
                class: c.class,
                waiting: c.waiting,
                released_per_s: rel as f64 / secs,
                mean_delay_us: (rel > 0).then(|| d(|x| x.delay_ns) / rel / 1000),
                pushed_out: d(|x| x.pushed_out),
                expired: d(|x| x.expired),
                refused: d(|x| x.refused),
            });
        }
    }
    out
}

/// Prints the classes' rates every interval (see [`watch_every`]).
fn watch_prio(client: &mut Client, args: &Args, every: Duration) -> Result<()> {
    watch_every(
        args,
        every,
        || Ok(client.prios(args.port)?),
        |out, before, now, secs, at| {
            let r = class_rates(before, now, secs);
            if args.json {
                serde_json::to_writer(&mut *out, &serde_json::json!({ "t": at, "classes": r }))?;
                return Ok(writeln!(out)?);
            }
            writeln!(
                out,
                "{:>8} {:>5} {:>5} {:>8} {:>10} {:>9} {:>10} {:>8} {:>8}",
                "T",
                "PORT",
                "CLASS",
                "WAITING",
                "RELEASE/S",
                "DELAY_MS",
                "PUSHED_OUT",
                "EXPIRED",
                "REFUSED"
            )?;
            for c in &r {
                writeln!(
                    out,
                    "{:>8.1} {:>5} {:>5} {:>8} {:>10.1} {:>9} {:>10} {:>8} {:>8}",
                    at,
                    c.port,
                    c.class,
                    c.waiting,
                    c.released_per_s,
                    ms(c.mean_delay_us),
                    c.pushed_out,
                    c.expired,
                    c.refused
                )?;
            }
            Ok(())
        },
    )
}

/// Reads every `every` until `args.count` intervals are done, and has `show` print the
/// interval: the reading before and now, the interval's seconds, and the seconds since
/// the start.
fn watch_every<T>(
    args: &Args,
    every: Duration,
    mut read: impl FnMut() -> Result<T>,
    mut show: impl FnMut(&mut std::io::StdoutLock<'static>, &T, &T, f64, f64) -> Result<()>,
) -> Result<()> {
    let out = &mut std::io::stdout().lock();
    let mut before = read()?;
    let mut t0 = Instant::now();
    let start = Instant::now();
    let mut n = 0u64;
    while args.count.is_none_or(|c| n < c) {
        std::thread::sleep(every.saturating_sub(t0.elapsed()));
        let now = read()?;
        let t1 = Instant::now();
        let secs = t1.duration_since(t0).as_secs_f64();
        show(
            out,
            &before,
            &now,
            secs,
            t1.duration_since(start).as_secs_f64(),
        )?;
        out.flush()?;
        before = now;
        t0 = t1;
        n += 1;
    }
    Ok(())
}

fn rates(before: &[Meter], now: &[Meter], secs: f64) -> Vec<Rate> {
    now.iter()
        .map(|m| {
            // A port metered during the interval counts from zero.
            let z = Meter::default();
            let b = before.iter().find(|b| b.port == m.port).unwrap_or(&z);
            let acc = m.accepted.saturating_sub(b.accepted);
            let delay = m.delay_ns.saturating_sub(b.delay_ns);
            Rate {
                port: m.port,
                waiting: m.waiting,
                open: m.open,
                accepted: acc,
                accepts_per_s: acc as f64 / secs,
                mean_delay_us: (acc > 0).then(|| delay / acc / 1000),
                rx_bytes_per_s: m.rx_bytes.saturating_sub(b.rx_bytes) as f64 / secs,
                tx_bytes_per_s: m.tx_bytes.saturating_sub(b.tx_bytes) as f64 / secs,
            }
        })
        .collect()
}

/// Prints the ports' rates every interval (see [`watch_every`]).
fn watch(client: &mut Client, args: &Args, every: Duration) -> Result<()> {
    watch_every(
        args,
        every,
        || Ok(client.meters(args.port)?),
        |out, before, now, secs, at| {
            let r = rates(before, now, secs);
            if args.json {
                serde_json::to_writer(&mut *out, &serde_json::json!({ "t": at, "ports": r }))?;
                return Ok(writeln!(out)?);
            }
            writeln!(
                out,
                "{:>8} {:>5} {:>8} {:>6} {:>9} {:>9} {:>12} {:>12}",
                "T", "PORT", "WAITING", "OPEN", "ACCEPT/S", "DELAY_MS", "RX_B/S", "TX_B/S"
            )?;
            for p in &r {
                writeln!(
                    out,
                    "{:>8.1} {:>5} {:>8} {:>6} {:>9.1} {:>9} {:>12.0} {:>12.0}",
                    at,
                    p.port,
                    p.waiting,
                    p.open,
                    p.accepts_per_s,
                    ms(p.mean_delay_us),
                    p.rx_bytes_per_s,
                    p.tx_bytes_per_s
                )?;
            }
            Ok(())
        },
    )
}

/// A watch interval, checked.
fn interval(secs: f64) -> Result<f64> {
    if !(0.01..=86_400.0).contains(&secs) {
        bail!("the interval must be between 0.01 and 86400 seconds");
    }
    Ok(secs)
}

/// Reads every counter and writes them in the Prometheus text format to `to` ("-":
/// standard output), through a temporary file renamed over it, so that a reader never
/// sees half of it.
fn write_metrics(client: &mut Client, to: &str) -> Result<()> {
    let snap = prom::Snapshot {
        meters: client.meters(None)?,
        rules: client.rules(None)?,
        groups: client.groups(None)?,
        prios: client.prios(None)?,
    };
    let text = prom::render(&snap);
    if to == "-" {
        std::io::stdout().lock().write_all(text.as_bytes())?;
        return Ok(());
    }
    let tmp = format!("{to}.tmp.{}", std::process::id());
    std::fs::write(&tmp, text).with_context(|| tmp.clone())?;
    std::fs::rename(&tmp, to).with_context(|| format!("renaming {tmp} to {to}"))
}

fn run(args: &Args) -> Result<()> {
    let mut client = Client::connect().context("cannot talk to the openqos module")?;
    if let Some(p) = args.add {
        return client
            .create_meter(p)
            .with_context(|| format!("cannot meter port {p}"));
    }
    if let Some(p) = args.delete {
        return client
            .delete_meter(p)
            .with_context(|| format!("cannot stop metering port {p}"));
    }
    if let Some(to) = &args.prometheus {
        return match args.interval {
            None => write_metrics(&mut client, to),
            Some(secs) => {
                let every = Duration::from_secs_f64(interval(secs)?);
                let mut n = 0u64;
                while args.count.is_none_or(|c| n < c) {
                    let t0 = Instant::now();
                    write_metrics(&mut client, to)?;
                    n += 1;
                    std::thread::sleep(every.saturating_sub(t0.elapsed()));
                }
                Ok(())
            }
        };
    }
    if let Some(secs) = args.interval {
        let every = Duration::from_secs_f64(interval(secs)?);
        if args.prio {
            return watch_prio(&mut client, args, every);
        }
        return watch(&mut client, args, every);
    }
    if args.prio {
        let prios = client.prios(args.port)?;
        let out = &mut std::io::stdout().lock();
        if args.json {
            serde_json::to_writer_pretty(
                &mut *out,
                &serde_json::json!({ "prios": prio_rows(&prios) }),
            )?;
            writeln!(out)?;
        } else {
            print_prio_table(out, &prios)?;
        }
        return Ok(());
    }
    let meters = client.meters(args.port)?;
    let out = &mut std::io::stdout().lock();
    if args.json {
        let rows: Vec<Row> = meters.iter().map(Row::of).collect();
        serde_json::to_writer_pretty(&mut *out, &serde_json::json!({ "meters": rows }))?;
        writeln!(out)?;
    } else {
        print_table(out, &meters)?;
    }
    Ok(())
}

fn main() {
    openqos::version_flag("netmeter", env!("CARGO_PKG_VERSION"));
    openqos::completions_flag::<Args>("netmeter");
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("netmeter: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter(port: u16, accepted: u64, delay_ns: u64, rx: u64) -> Meter {
        Meter {
            port,
            accepted,
            delay_ns,
            rx_bytes: rx,
            ..Meter::default()
        }
    }

    #[test]
    fn rates_are_per_interval() {
        let before = [meter(80, 10, 10_000_000, 100)];
        let now = [meter(80, 30, 50_000_000, 2100), meter(81, 5, 0, 0)];
        let r = rates(&before, &now, 2.0);
        assert_eq!(r[0].accepted, 20);
        assert_eq!(r[0].accepts_per_s, 10.0);
        assert_eq!(r[0].mean_delay_us, Some(2000));
        assert_eq!(r[0].rx_bytes_per_s, 1000.0);
        // New port: from zero.
        assert_eq!(r[1].accepted, 5);
        assert_eq!(r[1].mean_delay_us, Some(0));
    }

    fn class(c: u8, released: u64, delay_ns: u64) -> openqos::PrioClass {
        openqos::PrioClass {
            class: c,
            deadline_ms: None,
            waiting: 1,
            admitted: released,
            released,
            pushed_out: 0,
            expired: 0,
            refused: 0,
            delay_ns,
            lost: 0,
            hist: vec![0; openqos::abi::abi::hist::BUCKETS],
        }
    }

    #[test]
    fn class_rates_are_per_interval() {
        let port = |classes| PrioPort {
            port: 80,
            cap: 8,
            depth: 1,
            early_refuse: false,
            classes,
        };
        let before = [port(vec![class(0, 10, 10_000_000)])];
        let now = [port(vec![class(0, 30, 50_000_000), class(1, 4, 0)])];
        let r = class_rates(&before, &now, 2.0);
        assert_eq!(r[0].released_per_s, 10.0);
        assert_eq!(r[0].mean_delay_us, Some(2000));
        assert_eq!(r[1].released_per_s, 2.0);
        let mut out = Vec::new();
        print_prio_table(&mut out, &now).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
    }

    #[test]
    fn table_has_a_row_per_port() {
        let mut out = Vec::new();
        let m = Meter {
            oldest_ns: 1_234_000_000,
            ..meter(8081, 3, 3_000_000, 7)
        };
        print_table(&mut out, &[m]).unwrap();
        let text = String::from_utf8(out).unwrap();
        let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row[0], "8081");
        assert_eq!(row[2], "1234.0");
        assert_eq!(row[3], "3");
        assert_eq!(row[5], "1.0");
        assert_eq!(row[9], "7");
    }
}
