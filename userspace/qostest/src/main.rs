// SPDX-License-Identifier: GPL-2.0

//! Test helpers for the openqos QEMU suite.
//!
//! `qostest serve` is a server that tells, for every connection, which instance accepted
//! it and whom it saw: it reads `<len>\n` and `len` bytes, and answers
//! `<tag> <peer-ip> <peer-port> <fnv64 of the bytes>\n`. `qostest load` opens many such
//! connections from a chosen source address and checks every answer: the expected
//! instance, the client's real address and port, the payload hash.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage,
};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod badreq;
mod failnth;
mod fuzz;
mod imap;
mod synflood;

#[derive(Parser)]
#[command(name = "qostest", about = "openqos test helpers")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Mode {
    /// A thread blocked in accept().
    Blocking,
    /// Non-blocking accept driven by epoll.
    Epoll,
    /// Non-blocking accept driven by poll().
    Poll,
    /// Non-blocking accept driven by select().
    Select,
    /// Non-blocking accept() in a busy loop (every call a full accept attempt).
    Spin,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve tagged answers on a port.
    Serve(ServeArgs),
    /// One server with a fixed pool of workers on several ports (one instance shared by
    /// classes): every worker polls all the ports and serves one connection at a time,
    /// taking a fixed service time before it answers.
    Pool(PoolArgs),
    /// Open connections and verify every answer.
    Load(LoadArgs),
    /// Open connections that send nothing and keep them open (silent clients).
    Hold(HoldArgs),
    /// Change the conditions of one rule many times, as fast as the kernel takes them.
    Churn(ChurnArgs),
    /// Time connection round trips (connect, accept, a request and an answer, close)
    /// on two listening ports of this process in alternating blocks, and print the
    /// per-connection time of each and their ratio (the meter's cost: meter one port).
    Pingpong(PingpongArgs),
    /// Parse JSON from stdin and print the value at a dotted path (`meters.0.port`):
    /// strings bare, everything else as JSON. Fails if stdin is not JSON or the path
    /// does not exist.
    Json(JsonArgs),
    /// Send one raw request to the openqos family, unchecked, and print the outcome as
    /// `ok` or `errno=N attr=NAME msg=TEXT` (for testing the kernel's validation).
    Nl(NlArgs),
    /// Send the malformed requests of one phase (built from the ABI's constants) and
    /// check that each is refused with its errno, blamed attribute and message; print
    /// `correct=N` (scenario 11-netlink-raw).
    Badreq(BadreqArgs),
    /// Download a file from an FTP server in passive mode, waiting a while between the
    /// server's PASV/EPSV reply and connecting to the data port; print `bytes=N ms=M`
    /// (M: from the data connection to its end).
    Ftp(FtpArgs),
    /// Listen on a port, connect to it, and turn on kernel TLS (a dummy AES-GCM-128 key,
    /// TX and RX) on the accepted socket first, then on the client; check that data
    /// round trips through kTLS both ways. With `--addrform`, turn the accepted
    /// (v4-mapped) socket into an IPv4 one with IPV6_ADDRFORM instead. Both replace the
    /// socket's operations (`sock->ops`) behind the sensors' back.
    Ktls(KtlsArgs),
    /// Open-loop IMAP sessions at a fixed rate (the paper's mail workload): select,
    /// fetch N headers then their bodies, delete, undelete, log out; every answer
    /// checked. Prints `sessions= ok= bad= skipped= seconds= max_ms=`.
    Imap(imap::ImapArgs),
    /// TCP SYNs from random addresses of a source network to one address and port (a
    /// SYN flood; needs CAP_NET_RAW). Prints `sent= dropped= seconds= per_second=`.
    Synflood(synflood::SynfloodArgs),
    /// Structure-aware fuzzing of the openqos generic netlink family: valid, near-valid
    /// and malformed messages built from the ABI, from a seed that replays the run;
    /// every answer checked (one final answer each, well-formed replies, a message with
    /// every refusal). Prints `fuzz: seed= sent= ... violations=`.
    Fuzz(fuzz::FuzzArgs),
    /// Fail every allocation of every mutating command once in turn (the kernel's
    /// fail-nth): each attempt must fail cleanly, leaving the configuration exactly as
    /// it was, or succeed. Prints a line per case, then `failnth: cases= points=`.
    Failnth(failnth::FailnthArgs),
}

#[derive(clap::Args)]
struct PoolArgs {
    /// PORT:TAG, once per port.
    #[arg(long = "port", value_name = "PORT:TAG", required = true)]
    ports: Vec<String>,
    /// Worker threads.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    workers: u64,
    /// Time a worker spends on each connection before it answers.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    service_ms: u64,
    /// CPU time a worker burns on each connection (its thread's CPU clock, so a
    /// preempted worker still burns the whole of it), after --service-ms: a CPU-bound
    /// server whose utilization is connections/s x MS.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    cpu_ms: u64,
}

#[derive(clap::Args)]
struct FtpArgs {
    /// The server's control port.
    #[arg(long)]
    to: SocketAddr,
    /// File to retrieve.
    #[arg(long)]
    file: String,
    /// Milliseconds to wait after the passive reply before connecting.
    #[arg(long, default_value_t = 0)]
    wait_ms: u64,
    /// EPSV instead of PASV.
    #[arg(long)]
    epsv: bool,
}

/// One FTP reply (multi-line ones included): its code and last line.
fn ftp_reply(r: &mut impl BufRead) -> Result<(u32, String)> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            bail!("the FTP server closed the control connection");
        }
        let b = line.as_bytes();
        if b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b' ' {
            return Ok((line[..3].parse()?, line.trim_end().to_string()));
        }
    }
}

/// Sends `cmd` and reads the reply, which must have code `want`.
fn ftp_cmd(w: &mut TcpStream, r: &mut impl BufRead, cmd: &str, want: &[u32]) -> Result<String> {
    w.write_all(format!("{cmd}\r\n").as_bytes())?;
    let (code, line) = ftp_reply(r)?;
    if !want.contains(&code) {
        bail!("{cmd}: {line}");
    }
    Ok(line)
}

/// The data port of a 227 or 229 reply.
fn ftp_data_port(line: &str) -> Result<u16> {
    let inner = line
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(i, _)| i)
        .with_context(|| format!("no (...) in {line:?}"))?;
    if line.starts_with("229") {
        return Ok(inner.trim_matches('|').parse()?);
    }
    let n: Vec<u16> = inner.split(',').map(str::parse).collect::<Result<_, _>>()?;
    match n[..] {
        [_, _, _, _, p1, p2] => Ok(p1 * 256 + p2),
        _ => bail!("bad 227 reply {line:?}"),
    }
}

fn ftp(a: &FtpArgs) -> Result<()> {
    let mut w = TcpStream::connect(a.to).context("control connection")?;
    w.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut r = BufReader::new(w.try_clone()?);
    let (code, line) = ftp_reply(&mut r)?;
    if code != 220 {
        bail!("greeting: {line}");
    }
    ftp_cmd(&mut w, &mut r, "USER anonymous", &[230, 331])
        .and_then(|l| {
            if l.starts_with("331") {
                ftp_cmd(&mut w, &mut r, "PASS qostest@", &[230])
            } else {
                Ok(l)
            }
        })
        .context("login")?;
    ftp_cmd(&mut w, &mut r, "TYPE I", &[200])?;
    let reply = if a.epsv {
        ftp_cmd(&mut w, &mut r, "EPSV", &[229])?
    } else {
        ftp_cmd(&mut w, &mut r, "PASV", &[227])?
    };
    let port = ftp_data_port(&reply)?;
    std::thread::sleep(Duration::from_millis(a.wait_ms));
    let t0 = Instant::now();
    let mut d = TcpStream::connect(SocketAddr::new(a.to.ip(), port)).context("data connection")?;
    d.set_read_timeout(Some(Duration::from_secs(60)))?;
    ftp_cmd(&mut w, &mut r, &format!("RETR {}", a.file), &[125, 150])?;
    let mut buf = Vec::new();
    d.read_to_end(&mut buf).context("data")?;
    let ms = t0.elapsed().as_millis();
    ftp_reply(&mut r)?;
    let _ = w.write_all(b"QUIT\r\n");
    println!("bytes={} ms={ms}", buf.len());
    Ok(())
}

#[derive(clap::Args)]
struct HoldArgs {
    /// Destination.
    #[arg(long)]
    to: SocketAddr,
    /// Connections to open.
    #[arg(long)]
    count: u64,
    /// Seconds to keep them open once all are established.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Connections opened at once (threads, each opening its share in turn), so that
    /// a slow kernel still sees them all arrive within a rule's data timeout.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=256))]
    concurrency: u64,
}

#[derive(clap::Args)]
struct ChurnArgs {
    /// Incoming port of an existing address rule to change.
    #[arg(long)]
    port: u16,
    /// Outgoing port of the conditions added.
    #[arg(long)]
    to: u16,
    /// Changes in all (add, replace, delete in turn).
    #[arg(long)]
    count: u64,
}

#[derive(clap::Args)]
struct PingpongArgs {
    /// Port measured (e.g. metered).
    #[arg(long)]
    port: u16,
    /// Port compared with (e.g. not metered).
    #[arg(long)]
    base: u16,
    /// Blocks per port.
    #[arg(long, default_value_t = 30)]
    blocks: usize,
    /// Connections per block.
    #[arg(long, default_value_t = 200)]
    per_block: usize,
}

fn pingpong(a: &PingpongArgs) -> Result<()> {
    let ls = [
        listener("127.0.0.1", a.port, 128)?,
        listener("127.0.0.1", a.base, 128)?,
    ];
    // Any setup the caller does on the ports (metering) happens now.
    println!("ready");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let round = |l: &TcpListener| -> Result<f64> {
        let to = l.local_addr()?;
        let t0 = Instant::now();
        let mut buf = [0u8; 64];
        for _ in 0..a.per_block {
            let mut c = TcpStream::connect(to)?;
            let (mut s, _) = l.accept()?;
            c.write_all(&[7; 64])?;
            s.read_exact(&mut buf)?;
            s.write_all(&buf)?;
            c.read_exact(&mut buf)?;
            drop(s);
            drop(c);
        }
        Ok(t0.elapsed().as_secs_f64() * 1e6 / a.per_block as f64)
    };
    let (mut t, mut b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..a.blocks {
        // Alternate which port goes first, so drift within a pair cancels.
        let (x, y) = if i % 2 == 0 {
            let x = round(&ls[0])?;
            (x, round(&ls[1])?)
        } else {
            let y = round(&ls[1])?;
            (round(&ls[0])?, y)
        };
        t.push(x);
        b.push(y);
        ratios.push(x / y);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (lo, hi) = (
        ratios.iter().copied().fold(f64::MAX, f64::min),
        ratios.iter().copied().fold(0.0, f64::max),
    );
    let mut q = ratios.clone();
    q.sort_by(f64::total_cmp);
    let (q1, q3) = (q[q.len() / 4], q[q.len() * 3 / 4]);
    println!(
        "port_us={:.1} base_us={:.1} ratio={:.4} iqr={q1:.4}-{q3:.4} range={lo:.4}-{hi:.4}",
        median(&mut t),
        median(&mut b),
        median(&mut ratios)
    );
    Ok(())
}

#[derive(clap::Args)]
struct JsonArgs {
    /// Dotted path of object keys and array indices; empty for the whole document.
    #[arg(default_value = "")]
    path: String,
}

fn json(a: &JsonArgs) -> Result<()> {
    let v: serde_json::Value =
        serde_json::from_reader(std::io::stdin().lock()).context("stdin is not JSON")?;
    let mut cur = &v;
    for key in a.path.split('.').filter(|k| !k.is_empty()) {
        cur = match key.parse::<usize>() {
            Ok(i) if cur.is_array() => cur.get(i),
            _ => cur.get(key),
        }
        .with_context(|| format!("no {key} in {}", a.path))?;
    }
    match cur {
        serde_json::Value::String(s) => println!("{s}"),
        other => println!("{other}"),
    }
    Ok(())
}

#[derive(clap::Args)]
struct NlArgs {
    /// Command number (see rust/src/abi.rs).
    #[arg(long, required_unless_present = "batch")]
    cmd: Option<u8>,
    /// Attribute as TYPE:KIND:VALUE, KIND one of u8, u16, u32, u64, hex, str (with NUL),
    /// bytes (the text without NUL).
    #[arg(long = "attr")]
    attrs: Vec<String>,
    /// Read requests from stdin instead, one per line (`--cmd N --attr ...`, blank
    /// lines skipped), and print one outcome line for each, in order.
    #[arg(long, conflicts_with_all = ["cmd", "attrs"])]
    batch: bool,
    /// Follow each outcome with ` ms=N`, how long the kernel took to answer.
    #[arg(long)]
    time: bool,
}

#[derive(clap::Args)]
struct BadreqArgs {
    /// `rules` (no rule needed), `conditions` (needs the address rule 4500 -> 4501; ends
    /// with one valid raw condition), `unprivileged` (run without CAP_NET_ADMIN),
    /// `content` (scenario 14's rules) or `lease` (scenario 28's groups).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(badreq::PHASES))]
    phase: String,
}

/// One line of `qostest nl --batch`.
#[derive(Parser)]
#[command(no_binary_name = true)]
struct NlLine {
    #[arg(long)]
    cmd: u8,
    #[arg(long = "attr")]
    attrs: Vec<String>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Port to listen on.
    #[arg(long)]
    port: u16,
    /// Name reported to clients.
    #[arg(long)]
    tag: String,
    /// Address: 0.0.0.0, a v4 address, :: (dual stack) or ::v6only.
    #[arg(long, default_value = "0.0.0.0")]
    addr: String,
    /// Accept style.
    #[arg(long, value_enum, default_value = "blocking")]
    mode: Mode,
    /// listen() backlog.
    #[arg(long, default_value_t = 1024)]
    backlog: i32,
    /// Never accept (to fill the queue).
    #[arg(long)]
    no_accept: bool,
    /// Blocking mode: once a connection is queued, wait this long before accepting it
    /// (a server with a known queueing delay).
    #[arg(long, value_name = "MS")]
    accept_delay_ms: Option<u64>,
    /// After the answer line, send this many bytes of a known pattern.
    #[arg(long, default_value_t = 0)]
    send: usize,
    /// Send them with sendfile(2) from a file instead of write(2).
    #[arg(long)]
    sendfile: bool,
    /// Close each connection right after accept() (an accept-rate sink: no thread per
    /// connection).
    #[arg(long)]
    drop: bool,
    /// Listen at once, but start accepting only once this file exists (to fill the
    /// queue first).
    #[arg(long, value_name = "PATH")]
    start_file: Option<std::path::PathBuf>,
    /// Threads accepting on the listener at once (blocking and spin modes).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    threads: u64,
    /// Create the listener with this file-system uid (a server run by another user: the
    /// socket's owner is the creator's fsuid).
    #[arg(long, value_name = "UID")]
    fsuid: Option<u32>,
    /// Set SO_MARK on the listener.
    #[arg(long, value_name = "MARK")]
    mark: Option<u32>,
    /// Print `identity peer=ADDR mark=M uid=U` for every accepted connection: the
    /// accepted socket's SO_MARK and its owner's uid (from /proc/net/tcp, tcp6).
    #[arg(long)]
    identity: bool,
}

#[derive(clap::Args)]
struct LoadArgs {
    /// Destination, e.g. 127.0.0.1:21 or [::1]:21.
    #[arg(long)]
    to: SocketAddr,
    /// Source address to bind (a client class).
    #[arg(long)]
    from: Option<IpAddr>,
    /// Connections in all.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Parallel connections.
    #[arg(long, default_value_t = 1)]
    concurrency: u64,
    /// Open-loop arrivals: connection N starts N/RATE seconds after the first (as
    /// httperf --rate), unless all --concurrency connections are still open then, when
    /// it starts as soon as one closes.
    #[arg(long, value_name = "PER_SECOND")]
    rate: Option<f64>,
    /// Expected server tag, or several separated by commas (then `tags=` in the output
    /// counts the connections each one served).
    #[arg(long)]
    expect: Option<String>,
    /// Expect the connection to be refused or reset instead of served.
    #[arg(long)]
    expect_refused: bool,
    /// Payload size per connection.
    #[arg(long, default_value_t = 512)]
    size: usize,
    /// Per-connection timeout in seconds.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Header block sent before the request (`\r` and `\n` escapes are understood),
    /// e.g. 'GET / HTTP/1.1\r\nHost: www.foo.com\r\n\r\n'.
    #[arg(long)]
    header: Option<String>,
    /// Send the first N bytes of the request alone, then pause, then the rest.
    #[arg(long, value_name = "N")]
    split: Option<usize>,
    /// Pause of --split, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pause_ms: u64,
    /// Send the header block one byte a write (one segment each, TCP_NODELAY), pausing
    /// this many microseconds between bytes; then the rest.
    #[arg(long, value_name = "US", conflicts_with = "split")]
    trickle_us: Option<u64>,
    /// After the answer line, read and check this many bytes of the server's pattern
    /// (its --send).
    #[arg(long, default_value_t = 0)]
    recv: usize,
    /// Wait this long after the answer line before reading the bulk data (a slow
    /// reader: the server blocks in send meanwhile).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    recv_delay_ms: u64,
}

/// The bulk pattern of `serve --send` and `load --recv`.
fn bulk_byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// What a server sends after its answer line.
struct Bulk {
    len: usize,
    /// A file holding the pattern, for sendfile(2).
    file: Option<std::fs::File>,
}

impl Bulk {
    fn new(len: usize, sendfile: bool) -> Result<Self> {
        let file = if sendfile && len > 0 {
            let path = std::env::temp_dir().join(format!("qostest-bulk-{}", std::process::id()));
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)?;
            std::fs::remove_file(&path)?;
            f.write_all(&(0..len).map(bulk_byte).collect::<Vec<_>>())?;
            Some(f)
        } else {
            None
        };
        Ok(Bulk { len, file })
    }

    fn send(&self, s: &mut TcpStream) -> Result<()> {
        match &self.file {
            Some(f) => {
                let mut off: i64 = 0;
                while (off as usize) < self.len {
                    let left = self.len - off as usize;
                    let n =
                        nix::sys::sendfile::sendfile(s.as_fd(), f.as_fd(), Some(&mut off), left)?;
                    if n == 0 {
                        bail!("sendfile: no progress");
                    }
                }
            }
            None => s.write_all(&(0..self.len).map(bulk_byte).collect::<Vec<_>>())?,
        }
        Ok(())
    }
}

fn fnv64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// `peer=ADDR mark=M uid=U` of an accepted socket: its SO_MARK, and the uid of its owner
/// as /proc/net/tcp (or tcp6) shows it for the socket's inode.
fn socket_identity(s: &TcpStream) -> Result<String> {
    let peer = s.peer_addr()?;
    let mark = nix::sys::socket::getsockopt(s, sockopt::Mark)?;
    let ino = nix::sys::stat::fstat(s.as_raw_fd())?.st_ino.to_string();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).with_context(|| table.to_string())?;
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
        for f in text
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
        {
            if f.get(9) == Some(&ino.as_str()) {
                let uid = f.get(7).context("no uid column")?;
                return Ok(format!("peer={peer} mark={mark} uid={uid}"));
            }
        }
    }
    bail!("socket inode {ino} not in /proc/net/tcp or tcp6")
}

fn listener(addr: &str, port: u16, backlog: i32) -> Result<TcpListener> {
    let (ip, v6only): (IpAddr, Option<bool>) = match addr {
        "::v6only" => ("::".parse()?, Some(true)),
        a => {
            let ip: IpAddr = a.parse().context("bad --addr")?;
            (ip, ip.is_ipv6().then_some(false))
        }
    };
    let fam = if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(fam, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if let Some(v) = v6only {
        setsockopt(&fd, sockopt::Ipv6V6Only, &v)?;
    }
    bind(
        fd.as_raw_fd(),
        &SockaddrStorage::from(SocketAddr::new(ip, port)),
    )?;
    // nix caps its Backlog at SOMAXCONN (4096); accept-rate tests queue more (the
    // kernel caps it at net.core.somaxconn).
    // SAFETY: `fd` is a valid socket descriptor we own.
    if unsafe { nix::libc::listen(fd.as_raw_fd(), backlog) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(TcpListener::from(fd))
}

fn handle(mut s: TcpStream, tag: &str, bulk: &Bulk) {
    let peer = match s.peer_addr() {
        Ok(p) => p,
        Err(_) => return,
    };
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let mut r = BufReader::new(match s.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    if line.trim().parse::<usize>().is_err() && !line.trim().is_empty() {
        // A header block (content rule tests): skip it up to its empty line.
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line.trim().is_empty() => break,
                Ok(_) => {}
            }
        }
        line.clear();
        if r.read_line(&mut line).is_err() {
            return;
        }
    }
    let Ok(len) = line.trim().parse::<usize>() else {
        return;
    };
    let mut buf = vec![0; len];
    if r.read_exact(&mut buf).is_err() {
        return;
    }
    let ip = peer.ip().to_canonical();
    if writeln!(s, "{tag} {ip} {} {:016x}", peer.port(), fnv64(&buf)).is_ok() && bulk.len > 0 {
        let _ = bulk.send(&mut s);
    }
}

/// Burns `d` of this thread's CPU time.
fn burn_cpu(d: Duration) -> Result<()> {
    use nix::time::{clock_gettime, ClockId};
    if d.is_zero() {
        return Ok(());
    }
    let cpu = || -> Result<Duration> {
        Ok(Duration::from(clock_gettime(
            ClockId::CLOCK_THREAD_CPUTIME_ID,
        )?))
    };
    let end = cpu()? + d;
    let mut x = 0u64;
    while cpu()? < end {
        for i in 0..1000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
    Ok(())
}

fn pool(a: &PoolArgs) -> Result<()> {
    let mut ls = Vec::new();
    for spec in &a.ports {
        let (port, tag) = spec
            .split_once(':')
            .with_context(|| format!("{spec:?}: PORT:TAG"))?;
        let port: u16 = port
            .parse()
            .with_context(|| format!("{spec:?}: bad port"))?;
        let l = listener("0.0.0.0", port, 1024)?;
        l.set_nonblocking(true)?;
        println!("ready {tag} 0.0.0.0 {port}");
        ls.push((l, Arc::<str>::from(tag)));
    }
    std::io::stdout().flush()?;
    let ls = Arc::new(ls);
    let service = Duration::from_millis(a.service_ms);
    let cpu = Duration::from_millis(a.cpu_ms);
    let workers: Vec<_> = (0..a.workers)
        .map(|w| {
            let ls = ls.clone();
            std::thread::spawn(move || -> Result<()> {
                let bulk = Bulk::new(0, false)?;
                // Each worker starts its round at another port: no port is favoured.
                let mut next = w as usize;
                loop {
                    let mut fds: Vec<_> = ls
                        .iter()
                        .map(|(l, _)| {
                            nix::poll::PollFd::new(l.as_fd(), nix::poll::PollFlags::POLLIN)
                        })
                        .collect();
                    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1000u16)) {
                        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                        Err(e) => bail!("poll: {e}"),
                    }
                    drop(fds);
                    for i in 0..ls.len() {
                        let (l, tag) = &ls[(next + i) % ls.len()];
                        match l.accept() {
                            Ok((s, _)) => {
                                next = (next + i + 1) % ls.len();
                                std::thread::sleep(service);
                                burn_cpu(cpu)?;
                                handle(s, tag, &bulk);
                                break;
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    ErrorKind::WouldBlock | ErrorKind::Interrupted
                                ) => {}
                            Err(e) => bail!("accept: {e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a worker panicked"))??;
    }
    Ok(())
}

fn serve(args: &ServeArgs) -> Result<()> {
    let ServeArgs {
        port,
        ref tag,
        ref addr,
        mode,
        backlog,
        no_accept,
        accept_delay_ms,
        send,
        sendfile,
        drop,
        ref start_file,
        threads,
        fsuid,
        mark,
        identity,
    } = *args;
    let tag = tag.clone();
    let bulk = Arc::new(Bulk::new(send, sendfile)?);
    if accept_delay_ms.is_some() && mode != Mode::Blocking {
        bail!("--accept-delay-ms is for --mode blocking");
    }
    if threads > 1 && !matches!(mode, Mode::Blocking | Mode::Spin) {
        bail!("--threads is for --mode blocking and spin");
    }
    if let Some(u) = fsuid {
        // The fsuid is per thread: this one creates the listener.
        nix::unistd::setfsuid(nix::unistd::Uid::from_raw(u));
    }
    let l = listener(addr, port, backlog)?;
    if let Some(m) = mark {
        setsockopt(&l, sockopt::Mark, &m).context("SO_MARK")?;
    }
    println!("ready {tag} {addr} {port}");
    std::io::stdout().flush()?;
    if no_accept {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    if let Some(f) = start_file {
        while !f.exists() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let tag: Arc<str> = tag.into();
    let spawn = |s: TcpStream| {
        if identity {
            match socket_identity(&s) {
                Ok(id) => println!("identity {id}"),
                Err(e) => println!("identity error: {e:#}"),
            }
        }
        if drop {
            return;
        }
        let (tag, bulk) = (tag.clone(), bulk.clone());
        std::thread::spawn(move || handle(s, &tag, &bulk));
    };
    match mode {
        Mode::Blocking if threads > 1 => accept_threads(&l, threads, &spawn, false),
        Mode::Blocking => loop {
            if let Some(ms) = accept_delay_ms {
                // Wait until a connection is queued, then let it wait `ms` more.
                let mut fds = [nix::poll::PollFd::new(
                    l.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => bail!("poll: {e}"),
                }
                std::thread::sleep(Duration::from_millis(ms));
            }
            match l.accept() {
                Ok((s, _)) => spawn(s),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => bail!("accept: {e}"),
            }
        },
        Mode::Spin => {
            l.set_nonblocking(true)?;
            accept_threads(&l, threads, &spawn, true)
        }
        Mode::Epoll => {
            l.set_nonblocking(true)?;
            let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
            ep.add(l.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 0))?;
            let mut evs = [EpollEvent::empty(); 8];
            loop {
                ep.wait(&mut evs, EpollTimeout::NONE)?;
                drain_accept(&l, &spawn)?;
            }
        }
        Mode::Poll => {
            l.set_nonblocking(true)?;
            loop {
                let mut fds = [nix::poll::PollFd::new(
                    l.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE)?;
                drain_accept(&l, &spawn)?;
            }
        }
        Mode::Select => {
            l.set_nonblocking(true)?;
            loop {
                let mut set = nix::sys::select::FdSet::new();
                set.insert(l.as_fd());
                nix::sys::select::select(None, Some(&mut set), None, None, None)?;
                drain_accept(&l, &spawn)?;
            }
        }
    }
}

/// Accepts on `l` with `threads` threads at once (see [`accept_loop`]) until one fails.
fn accept_threads(
    l: &TcpListener,
    threads: u64,
    spawn: &(impl Fn(TcpStream) + Sync),
    spin: bool,
) -> Result<()> {
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..threads)
            .map(|_| sc.spawn(|| accept_loop(l, spawn, spin)))
            .collect();
        for h in hs {
            h.join()
                .map_err(|_| anyhow::anyhow!("an accepting thread panicked"))??;
        }
        Ok(())
    })
}

/// One of several threads accepting on `l` until an error: blocking, or (`spin`) a busy
/// loop of non-blocking calls.
fn accept_loop(l: &TcpListener, spawn: &(impl Fn(TcpStream) + Sync), spin: bool) -> Result<()> {
    loop {
        match l.accept() {
            Ok((s, _)) => spawn(s),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if spin && e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => bail!("accept: {e}"),
        }
    }
}

fn drain_accept(l: &TcpListener, spawn: &impl Fn(TcpStream)) -> Result<()> {
    loop {
        match l.accept() {
            Ok((s, _)) => spawn(s),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => bail!("accept: {e}"),
        }
    }
}

fn connect(to: SocketAddr, from: Option<IpAddr>, timeout: Duration) -> Result<TcpStream> {
    let Some(src) = from else {
        return Ok(TcpStream::connect_timeout(&to, timeout)?);
    };
    let fam = if to.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(fam, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    bind(
        fd.as_raw_fd(),
        &SockaddrStorage::from(SocketAddr::new(src, 0)),
    )?;
    nix::sys::socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(to))?;
    // The descriptor's ownership moves into the stream.
    Ok(TcpStream::from(fd))
}

/// How a client sends its request.
#[derive(Clone)]
struct Shape {
    header: Vec<u8>,
    split: Option<(usize, Duration)>,
    trickle: Option<Duration>,
    recv: usize,
    recv_delay: Duration,
}

/// One connection: Ok(reply line, local address, payload hash, bytes sent, bytes
/// received) or an error.
fn one(
    to: SocketAddr,
    from: Option<IpAddr>,
    size: usize,
    id: u64,
    timeout: Duration,
    shape: &Shape,
) -> Result<(String, SocketAddr, u64, usize, usize)> {
    let mut s = connect(to, from, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    let local = s.local_addr()?;
    let payload: Vec<u8> = (0..size)
        .map(|i| (i as u64 ^ id.wrapping_mul(2654435761)) as u8)
        .collect();
    let mut req = shape.header.clone();
    req.extend_from_slice(format!("{size}\n").as_bytes());
    req.extend_from_slice(&payload);
    if let Some(pause) = shape.trickle {
        let h = shape.header.len();
        for b in &req[..h] {
            s.write_all(std::slice::from_ref(b))?;
            std::thread::sleep(pause);
        }
        s.write_all(&req[h..])?;
    } else {
        match shape.split {
            Some((n, pause)) if n < req.len() => {
                s.write_all(&req[..n])?;
                std::thread::sleep(pause);
                s.write_all(&req[n..])?;
            }
            _ => s.write_all(&req)?,
        }
    }
    let mut line = String::new();
    let mut r = BufReader::new(&s);
    r.read_line(&mut line)?;
    if line.is_empty() {
        bail!("connection closed without an answer");
    }
    if shape.recv > 0 {
        std::thread::sleep(shape.recv_delay);
        let mut bulk = vec![0; shape.recv];
        r.read_exact(&mut bulk)?;
        if let Some(i) = (0..bulk.len()).find(|&i| bulk[i] != bulk_byte(i)) {
            bail!("bulk data differs at byte {i}");
        }
    }
    let got = line.len() + shape.recv;
    Ok((line, local, fnv64(&payload), req.len(), got))
}

fn load(args: &LoadArgs) -> Result<()> {
    let LoadArgs {
        to,
        from,
        count,
        concurrency: conc,
        rate,
        ref expect,
        expect_refused: refused,
        size,
        timeout,
        ref header,
        split,
        pause_ms,
        trickle_us,
        recv,
        recv_delay_ms,
    } = *args;
    let expect = expect.clone();
    if let Some(r) = rate {
        if !(r.is_finite() && r > 0.0) {
            bail!("--rate must be a positive number of connections per second");
        }
    }
    let shape = Shape {
        header: header
            .as_deref()
            .unwrap_or("")
            .replace("\\r", "\r")
            .replace("\\n", "\n")
            .into_bytes(),
        split: split.map(|n| (n, Duration::from_millis(pause_ms))),
        trickle: trickle_us.map(Duration::from_micros),
        recv,
        recv_delay: Duration::from_millis(recv_delay_ms),
    };
    // Bytes of the connections served correctly, in each direction.
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let slowest = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let max_refuse = Arc::new(AtomicU64::new(0));
    let tags = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
        String,
        u64,
    >::new()));
    let threads: Vec<_> = (0..conc.min(count).max(1))
        .map(|_| {
            let (sent, received) = (sent.clone(), received.clone());
            let (next, ok, bad, expect, max_refuse, tags, shape, slowest) = (
                next.clone(),
                ok.clone(),
                bad.clone(),
                expect.clone(),
                max_refuse.clone(),
                tags.clone(),
                shape.clone(),
                slowest.clone(),
            );
            std::thread::spawn(move || loop {
                let id = next.fetch_add(1, Ordering::Relaxed);
                if id >= count {
                    return;
                }
                if let Some(r) = rate {
                    let due = start + Duration::from_secs_f64(id as f64 / r);
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                }
                let t0 = Instant::now();
                let r = one(to, from, size, id, Duration::from_secs(timeout), &shape);
                slowest.fetch_max(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
                let good = match (&r, refused) {
                    (Err(_), true) => {
                        max_refuse.fetch_max(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
                        true
                    }
                    (Ok((line, ..)), true) => {
                        eprintln!("conn {id}: expected refusal, got answer {}", line.trim());
                        false
                    }
                    (Err(e), false) => {
                        eprintln!("conn {id}: {e:#}");
                        false
                    }
                    (Ok((line, local, hash, out, back)), false) => {
                        let f: Vec<&str> = line.split_whitespace().collect();
                        let want_ip = local.ip().to_canonical();
                        let fine = f.len() == 4
                            && expect
                                .as_deref()
                                .is_none_or(|e| e.split(',').any(|t| t == f[0]))
                            && f[1].parse::<IpAddr>().ok() == Some(want_ip)
                            && f[2].parse::<u16>().ok() == Some(local.port())
                            && f[3] == format!("{hash:016x}");
                        if fine {
                            sent.fetch_add(*out as u64, Ordering::Relaxed);
                            received.fetch_add(*back as u64, Ordering::Relaxed);
                            if let Ok(mut t) = tags.lock() {
                                *t.entry(f[0].to_string()).or_default() += 1;
                            }
                        }
                        if !fine {
                            eprintln!(
                                "conn {id}: bad answer '{}' (expected {:?} {} {} {hash:016x})",
                                line.trim(),
                                expect,
                                want_ip,
                                local.port()
                            );
                        }
                        fine
                    }
                };
                if good { &ok } else { &bad }.fetch_add(1, Ordering::Relaxed);
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let (ok, bad) = (ok.load(Ordering::Relaxed), bad.load(Ordering::Relaxed));
    let el = start.elapsed().as_secs_f64();
    let tags = tags
        .lock()
        .map(|t| {
            t.iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    println!(
        "ok={ok} bad={bad} seconds={el:.2} rate={:.0} max_refusal_ms={} max_ms={} sent={} received={} tags={tags}",
        ok as f64 / el,
        max_refuse.load(Ordering::Relaxed),
        slowest.load(Ordering::Relaxed),
        sent.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed)
    );
    if bad > 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn hold(a: &HoldArgs) -> Result<()> {
    // One descriptor per connection: raise the limit to what they need (past the hard
    // limit if we may: root may, up to fs.nr_open), or at least to the hard limit.
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let want = a.count.saturating_add(64);
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < want && setrlimit(Resource::RLIMIT_NOFILE, want, want.max(hard)).is_err() {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        if hard < want {
            bail!(
                "{} connections need {want} descriptors; the hard limit is {hard}",
                a.count
            );
        }
    }
    let t0 = Instant::now();
    let conns = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..a.concurrency)
            .map(|w| {
                scope.spawn(move || -> Result<Vec<TcpStream>> {
                    (w..a.count)
                        .step_by(a.concurrency as usize)
                        .map(|i| {
                            TcpStream::connect_timeout(&a.to, Duration::from_secs(10))
                                .with_context(|| format!("silent connection {i}"))
                        })
                        .collect()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a connecting thread panicked"))?
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let conns: Vec<TcpStream> = conns.into_iter().flatten().collect();
    println!("held={} ms={}", conns.len(), t0.elapsed().as_millis());
    std::io::stdout().flush()?;
    std::thread::sleep(Duration::from_secs(a.seconds));
    Ok(())
}

fn churn(a: &ChurnArgs) -> Result<()> {
    let mut c = openqos::Client::connect()?;
    let cond = |i: u64| openqos::Matcher::Ipv4 {
        addr: std::net::Ipv4Addr::new(10, (i >> 8) as u8, i as u8, 0),
        mask: std::net::Ipv4Addr::new(255, 255, 255, 0),
    };
    let t0 = Instant::now();
    for i in 0..a.count {
        match i % 3 {
            0 => c.add_condition(a.port, cond(i), a.to)?,
            1 => c.set_condition(a.port, Some(1), cond(i), a.to)?,
            _ => c.delete_condition(a.port, 1)?,
        }
    }
    println!(
        "changes={} seconds={:.2}",
        a.count,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn raw_attr(spec: &str) -> Result<(u16, Vec<u8>)> {
    let mut it = spec.splitn(3, ':');
    let (Some(ty), Some(kind), Some(v)) = (it.next(), it.next(), it.next()) else {
        bail!("attribute '{spec}' is not TYPE:KIND:VALUE");
    };
    let ty: u16 = ty.parse().context("attribute type")?;
    let bytes = match kind {
        "u8" => vec![v.parse::<u8>()?],
        "u16" => v.parse::<u16>()?.to_ne_bytes().to_vec(),
        "u32" => v.parse::<u32>()?.to_ne_bytes().to_vec(),
        "u64" => v.parse::<u64>()?.to_ne_bytes().to_vec(),
        "str" => [v.as_bytes(), &[0]].concat(),
        "bytes" => v.as_bytes().to_vec(),
        "hex" => (0..v.len() / 2)
            .map(|i| u8::from_str_radix(&v[2 * i..2 * i + 2], 16))
            .collect::<std::result::Result<_, _>>()?,
        _ => bail!("unknown attribute kind '{kind}'"),
    };
    Ok((ty, bytes))
}

fn nl(a: &NlArgs) -> Result<()> {
    let mut c = openqos::Client::connect()?;
    let mut one = |cmd: u8, attrs: &[String]| -> Result<()> {
        let t0 = Instant::now();
        let outcome = nl_one(&mut c, cmd, attrs)?;
        match a.time {
            true => println!("{outcome} ms={}", t0.elapsed().as_millis()),
            false => println!("{outcome}"),
        }
        Ok(())
    };
    if !a.batch {
        return one(a.cmd.context("--cmd is required")?, &a.attrs);
    }
    for (n, line) in std::io::stdin().lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let req = NlLine::try_parse_from(line.split_whitespace())
            .with_context(|| format!("line {}: {line}", n + 1))?;
        one(req.cmd, &req.attrs)?;
    }
    Ok(())
}

/// Sends one raw request; `ok` or `errno=N attr=NAME msg=TEXT`.
fn nl_one(c: &mut openqos::Client, cmd: u8, attrs: &[String]) -> Result<String> {
    let attrs = attrs
        .iter()
        .map(|s| raw_attr(s))
        .collect::<Result<Vec<_>>>()?;
    match c.request_unchecked(cmd, &attrs) {
        Ok(()) => Ok("ok".into()),
        Err(openqos::Error::Kernel {
            errno,
            message,
            attr,
            ..
        }) => Ok(format!(
            "errno={errno} attr={} msg={}",
            attr.unwrap_or("-"),
            message.as_deref().unwrap_or("-")
        )),
        Err(e) => Err(e.into()),
    }
}

#[derive(clap::Args)]
struct KtlsArgs {
    /// Port to listen on.
    #[arg(long)]
    port: u16,
    /// Address to listen on (`::` is dual stack).
    #[arg(long, default_value = "127.0.0.1")]
    addr: String,
    /// Address to connect to (default: `--addr`).
    #[arg(long)]
    connect: Option<IpAddr>,
    /// Connections.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// IPV6_ADDRFORM to AF_INET on the accepted socket instead of kTLS (a v4-mapped
    /// client of a dual-stack listener).
    #[arg(long)]
    addrform: bool,
    /// Print `listening` once the port listens, then connect only once this file
    /// exists (so that a meter can wrap the listener first).
    #[arg(long, value_name = "PATH")]
    go_file: Option<std::path::PathBuf>,
    /// After the first round trip on every connection, print `round 1 ok` and wait for
    /// this file before a second round trip on the same connections.
    #[arg(long, value_name = "PATH")]
    pause_file: Option<std::path::PathBuf>,
}

/// A dummy TLS 1.2 AES-GCM-128 key for one direction (`dir` tells them apart).
fn tls_key(dir: u8) -> sockopt::TlsCryptoInfo {
    use nix::libc;
    // SAFETY: a plain C struct of integers and byte arrays: all zeroes is valid.
    let mut info: libc::tls12_crypto_info_aes_gcm_128 = unsafe { std::mem::zeroed() };
    info.info.version = libc::TLS_1_2_VERSION;
    info.info.cipher_type = libc::TLS_CIPHER_AES_GCM_128;
    info.key = [0x40 + dir; 16];
    info.iv = [dir; 8];
    info.salt = [0x10 + dir; 4];
    sockopt::TlsCryptoInfo::Aes128Gcm(info)
}

/// Turns kTLS on for `s`: TX with key `tx`, RX with key `rx`.
fn ktls_on(s: &TcpStream, tx: u8, rx: u8) -> Result<()> {
    setsockopt(s, sockopt::TcpUlp::default(), b"tls").context("TCP_ULP tls")?;
    setsockopt(s, sockopt::TcpTlsTx, &tls_key(tx)).context("TLS_TX")?;
    setsockopt(s, sockopt::TcpTlsRx, &tls_key(rx)).context("TLS_RX")?;
    Ok(())
}

/// IPV6_ADDRFORM to AF_INET on `s` (nix has no wrapper for it).
fn addrform(s: &TcpStream) -> Result<()> {
    use nix::libc;
    let v: libc::c_int = libc::AF_INET;
    // SAFETY: `s` is an open socket; `v` is a valid int for the call's duration.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_ADDRFORM,
            std::ptr::from_ref(&v).cast(),
            std::mem::size_of_val(&v) as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("IPV6_ADDRFORM");
    }
    Ok(())
}

/// One round trip: `c` sends a message, `s` checks it and answers its reverse.
fn ktls_round(c: &mut TcpStream, s: &mut TcpStream, i: usize, round: u8) -> Result<()> {
    let msg: Vec<u8> = (0..3000)
        .map(|k| (k * 7 + i + usize::from(round)) as u8)
        .collect();
    c.write_all(&msg)?;
    let mut got = vec![0; msg.len()];
    s.read_exact(&mut got).context("server read")?;
    if got != msg {
        bail!("connection {i}: the server read other bytes than the client sent");
    }
    got.reverse();
    s.write_all(&got)?;
    let mut back = vec![0; msg.len()];
    c.read_exact(&mut back).context("client read")?;
    if back != got {
        bail!("connection {i}: the client read other bytes than the server sent");
    }
    Ok(())
}

fn wait_file(p: &std::path::Path) {
    while !p.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ktls(a: &KtlsArgs) -> Result<()> {
    let l = listener(&a.addr, a.port, 128)?;
    let to = SocketAddr::new(
        match a.connect {
            Some(ip) => ip,
            None => l.local_addr()?.ip(),
        },
        a.port,
    );
    if let Some(go) = &a.go_file {
        println!("listening");
        std::io::stdout().flush()?;
        wait_file(go);
    }
    let mut pairs = Vec::new();
    for i in 0..a.count {
        let mut c = TcpStream::connect(to)?;
        let (mut s, _) = l.accept()?;
        for x in [&c, &s] {
            x.set_read_timeout(Some(Duration::from_secs(20)))?;
        }
        if a.addrform {
            addrform(&s)?;
        } else {
            // The accepted socket first: the first kTLS socket of a family makes tls
            // copy its operations into tls's own tables.
            ktls_on(&s, 2, 1)?;
            ktls_on(&c, 1, 2)?;
        }
        ktls_round(&mut c, &mut s, i, 1)?;
        pairs.push((c, s));
    }
    if let Some(p) = &a.pause_file {
        println!("round 1 ok");
        std::io::stdout().flush()?;
        wait_file(p);
        for (i, (c, s)) in pairs.iter_mut().enumerate() {
            ktls_round(c, s, i, 2)?;
        }
    }
    drop(pairs);
    println!("ktls ok count={}", a.count);
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Serve(a) => serve(&a),
        Cmd::Pool(a) => pool(&a),
        Cmd::Hold(a) => hold(&a),
        Cmd::Churn(a) => churn(&a),
        Cmd::Load(a) => load(&a),
        Cmd::Nl(a) => nl(&a),
        Cmd::Badreq(a) => {
            println!("correct={}", badreq::run(&a.phase)?);
            Ok(())
        }
        Cmd::Json(a) => json(&a),
        Cmd::Ftp(a) => ftp(&a),
        Cmd::Pingpong(a) => pingpong(&a),
        Cmd::Ktls(a) => ktls(&a),
        Cmd::Imap(a) => imap::imap(a),
        Cmd::Synflood(a) => synflood::synflood(a),
        Cmd::Fuzz(a) => fuzz::fuzz(&a),
        Cmd::Failnth(a) => failnth::failnth(&a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ftp_data_ports() {
        let p = ftp_data_port("227 Entering Passive Mode (127,0,0,1,8,174).").unwrap();
        assert_eq!(p, 2222);
        let p = ftp_data_port("229 Entering Extended Passive Mode (|||40123|)").unwrap();
        assert_eq!(p, 40123);
        assert!(ftp_data_port("227 Entering Passive Mode").is_err());
        assert!(ftp_data_port("227 (1,2,3)").is_err());
    }

    #[test]
    fn ftp_replies_skip_continuation_lines() {
        let mut r = BufReader::new(&b"230-Welcome\r\n230-more\r\n230 Login ok.\r\n"[..]);
        assert_eq!(
            ftp_reply(&mut r).unwrap(),
            (230, "230 Login ok.".to_string())
        );
    }
}
