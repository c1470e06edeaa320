// SPDX-License-Identifier: GPL-2.0

//! `qostest imap`: open-loop IMAP sessions, the paper's mail workload (section 4.2).
//!
//! Sessions start at a fixed rate whatever the server does (as httperf does for the web
//! experiments), each on its own thread. A session connects, reads the greeting (the
//! server runs preauthenticated, as an inetd-started imapd does for a logged-in user),
//! selects INBOX, fetches the headers of messages 1 to N and then their bodies, marks
//! them deleted, unmarks them, and logs out. Every command's tagged answer must be `OK`,
//! and every body must arrive whole. A session that outlives the timeout gives up (its
//! connection may still wait in a queue; the server later finds it closed).

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct ImapArgs {
    /// The server, e.g. 127.0.0.1:143.
    #[arg(long)]
    to: SocketAddr,
    /// Source address to bind (a client class).
    #[arg(long)]
    from: Option<IpAddr>,
    /// New sessions per second (open loop).
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Stop starting sessions after this many seconds (0: until killed), then wait for
    /// the open ones and print a summary.
    #[arg(long, default_value_t = 0)]
    seconds: u64,
    /// Messages fetched, deleted and undeleted per session (1 to N).
    #[arg(long, default_value_t = 5)]
    messages: u32,
    /// Smallest body in bytes each fetched message must have.
    #[arg(long, default_value_t = 3000)]
    body: usize,
    /// Seconds a session may take before it gives up.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Sessions open at once at most; a session due when this many are open is not
    /// started and counted as skipped.
    #[arg(long, default_value_t = 400)]
    max_open: u64,
}

/// Reads one server response line; a line that ends in a literal `{N}` is followed by N
/// raw bytes, which are returned with it (their count in the second field).
fn response(r: &mut impl BufRead) -> Result<(String, usize)> {
    let mut line = String::new();
    let mut literal = 0;
    loop {
        let mut part = String::new();
        if r.read_line(&mut part)? == 0 {
            bail!("the server closed the connection");
        }
        let n = literal_len(&part);
        line.push_str(&part);
        match n {
            Some(n) => {
                let mut buf = vec![0; n];
                r.read_exact(&mut buf)?;
                literal += n;
            }
            None => return Ok((line, literal)),
        }
    }
}

/// The length of the literal a response line announces at its end (`... {3012}\r\n`).
fn literal_len(line: &str) -> Option<usize> {
    let t = line.trim_end_matches(['\r', '\n']);
    let t = t.strip_suffix('}')?;
    let open = t.rfind('{')?;
    t[open + 1..].parse().ok()
}

/// Sends a tagged command and reads until its tagged answer, which must be OK; returns
/// the literal bytes received with the untagged responses.
fn command(s: &mut TcpStream, r: &mut impl BufRead, tag: &str, cmd: &str) -> Result<usize> {
    s.write_all(format!("{tag} {cmd}\r\n").as_bytes())?;
    let mut bytes = 0;
    loop {
        let (line, lit) = response(r)?;
        bytes += lit;
        if let Some(rest) = line.strip_prefix(tag).and_then(|l| l.strip_prefix(' ')) {
            if rest.starts_with("OK") {
                return Ok(bytes);
            }
            bail!("{tag} {cmd}: {}", line.trim_end());
        }
    }
}

/// One session; returns the body bytes fetched.
fn session(a: &ImapArgs) -> Result<usize> {
    let timeout = Duration::from_secs(a.timeout);
    let mut s = crate::connect(a.to, a.from, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    let mut r = BufReader::new(s.try_clone()?);
    let (greeting, _) = response(&mut r).context("greeting")?;
    if !greeting.starts_with("* PREAUTH") && !greeting.starts_with("* OK") {
        bail!("greeting: {}", greeting.trim_end());
    }
    let n = a.messages;
    command(&mut s, &mut r, "a1", "SELECT INBOX")?;
    command(
        &mut s,
        &mut r,
        "a2",
        &format!("FETCH 1:{n} (BODY.PEEK[HEADER])"),
    )?;
    let body = command(
        &mut s,
        &mut r,
        "a3",
        &format!("FETCH 1:{n} (BODY.PEEK[TEXT])"),
    )?;
    if body < a.body * n as usize {
        bail!(
            "bodies of {body} bytes in all, want at least {}",
            a.body * n as usize
        );
    }
    command(
        &mut s,
        &mut r,
        "a4",
        &format!("STORE 1:{n} +FLAGS.SILENT (\\Deleted)"),
    )?;
    command(
        &mut s,
        &mut r,
        "a5",
        &format!("STORE 1:{n} -FLAGS.SILENT (\\Deleted)"),
    )?;
    command(&mut s, &mut r, "a6", "LOGOUT")?;
    Ok(body)
}

pub fn imap(a: ImapArgs) -> Result<()> {
    if !(a.rate > 0.0 && a.rate <= 10_000.0) {
        bail!("--rate must be above 0 and at most 10000 sessions a second");
    }
    let a = Arc::new(a);
    let (ok, bad, skipped, open) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let slowest = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / a.rate);
    let mut due = start;
    let mut started = 0u64;
    while a.seconds == 0 || due.duration_since(start).as_secs() < a.seconds {
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        due += gap;
        started += 1;
        if open.load(Ordering::Relaxed) >= a.max_open {
            skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let (a, ok, bad, open, slowest) = (
            a.clone(),
            ok.clone(),
            bad.clone(),
            open.clone(),
            slowest.clone(),
        );
        std::thread::spawn(move || {
            let t0 = Instant::now();
            match session(&a) {
                Ok(_) => {
                    ok.fetch_add(1, Ordering::Relaxed);
                    slowest.fetch_max(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    bad.fetch_add(1, Ordering::Relaxed);
                    eprintln!("session: {e:#}");
                }
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    while open.load(Ordering::Relaxed) > 0 {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, bad) = (ok.load(Ordering::Relaxed), bad.load(Ordering::Relaxed));
    println!(
        "sessions={started} ok={ok} bad={bad} skipped={} seconds={:.1} max_ms={}",
        skipped.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64(),
        slowest.load(Ordering::Relaxed)
    );
    if bad > 0 || ok == 0 {
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_read_whole() {
        let raw =
            b"* 1 FETCH (BODY[TEXT] {7}\r\na1 OK\r\n)\r\n* 2 FETCH (FLAGS ())\r\na3 OK done\r\n";
        let mut r = BufReader::new(&raw[..]);
        // The literal holds a line that looks like a tagged answer: it is data.
        let (line, lit) = response(&mut r).unwrap();
        assert_eq!(lit, 7);
        assert!(line.ends_with(")\r\n"));
        assert_eq!(response(&mut r).unwrap().1, 0);
        let (last, _) = response(&mut r).unwrap();
        assert!(last.starts_with("a3 OK"));
    }

    #[test]
    fn literal_lengths() {
        assert_eq!(literal_len("* 1 FETCH (BODY[TEXT] {3012}\r\n"), Some(3012));
        assert_eq!(literal_len("a1 OK done\r\n"), None);
        assert_eq!(literal_len("* OK {x}\r\n"), None);
    }
}
