// SPDX-License-Identifier: GPL-2.0

//! `qostest synflood`: TCP SYNs from spoofed sources (testing.md D3).
//!
//! A raw socket of protocol `IPPROTO_RAW` (the IP header is ours, `IP_HDRINCL`; the
//! kernel fills in its checksum and length) sends SYNs to one address and port, each
//! from a random address of a source network and a random port, as fast as it can or at
//! a fixed rate. No handshake completes: the answers go to addresses that are not there,
//! so every SYN leaves a request in the listener's SYN queue until the queue is full and
//! the kernel answers with SYN cookies. Needs `CAP_NET_RAW`.

use anyhow::{bail, Context, Result};
use nix::sys::socket::{
    sendto, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn,
};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct SynfloodArgs {
    /// The target, an IPv4 address and port, e.g. 10.77.0.1:80.
    #[arg(long)]
    to: SocketAddrV4,
    /// The source network, e.g. 10.88.0.0/16: every SYN from a random address of it.
    #[arg(long)]
    from: String,
    /// How long to send.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// SYNs per second (0: as fast as the socket takes them).
    #[arg(long, default_value_t = 0)]
    rate: u64,
}

/// The one's-complement sum of `data` as 16-bit big-endian words, added to `sum`.
fn sum16(data: &[u8], mut sum: u32) -> u32 {
    for w in data.chunks(2) {
        let hi = u32::from(w[0]) << 8;
        sum += hi | w.get(1).map_or(0, |&b| u32::from(b));
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet holding a TCP SYN from `src` to `dst`, sequence number `seq`.
fn syn(src: SocketAddrV4, dst: SocketAddrV4, seq: u32) -> [u8; 40] {
    let mut p = [0u8; 40];
    // IPv4: version 4, header of 5 words, total length 40, TTL 64, TCP. The kernel
    // fills in the identification and the checksum.
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.ip().octets());
    p[16..20].copy_from_slice(&dst.ip().octets());
    // TCP: ports, sequence, data offset 5 words, SYN, window 64 KiB - 1.
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&src.port().to_be_bytes());
    t[2..4].copy_from_slice(&dst.port().to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02;
    t[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    // The checksum covers the pseudo-header (addresses, protocol, TCP length) too.
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.ip().octets());
    pseudo[4..8].copy_from_slice(&dst.ip().octets());
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&20u16.to_be_bytes());
    let c = fold(sum16(&p[20..], sum16(&pseudo, 0)));
    p[36..38].copy_from_slice(&c.to_be_bytes());
    p
}

/// `a.b.c.d/len` as (network, host mask).
fn network(s: &str) -> Result<(u32, u32)> {
    let (a, l) = s
        .split_once('/')
        .context("the source network needs a /length")?;
    let addr: Ipv4Addr = a.parse().context("the source network's address")?;
    let len: u32 = l.parse().context("the source network's length")?;
    if !(8..=30).contains(&len) {
        bail!("the source network's length must be 8 to 30");
    }
    let host = u32::MAX >> len;
    Ok((u32::from(addr) & !host, host))
}

pub fn synflood(a: SynfloodArgs) -> Result<()> {
    let (net, host) = network(&a.from)?;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::empty(),
        SockProtocol::Raw,
    )
    .context("raw socket (needs CAP_NET_RAW)")?;
    let dst = SockaddrIn::from(a.to);
    // xorshift64*, seeded from the clock: sources, ports and sequence numbers.
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = (clock ^ u64::from(std::process::id())) | 1;
    let mut next = || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let start = Instant::now();
    let end = Duration::from_secs_f64(a.seconds);
    let (mut sent, mut refused) = (0u64, 0u64);
    while start.elapsed() < end {
        if a.rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / a.rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let r = next();
        // Not the network's first or last address.
        let h = (r as u32 % (host - 1)) + 1;
        let src = SocketAddrV4::new(Ipv4Addr::from(net | h), 1024 + (r >> 32) as u16 % 64000);
        let p = syn(src, a.to, (r >> 16) as u32);
        match sendto(fd.as_raw_fd(), &p, &dst, MsgFlags::empty()) {
            Ok(_) => sent += 1,
            // A full device queue: count it and go on.
            Err(nix::errno::Errno::ENOBUFS) => refused += 1,
            Err(e) => bail!("sendto: {e}"),
        }
    }
    let s = start.elapsed().as_secs_f64();
    println!(
        "sent={sent} dropped={refused} seconds={s:.2} per_second={:.0}",
        sent as f64 / s
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syn_checksum_verifies() {
        let p = syn(
            "10.88.1.2:40000".parse().unwrap(),
            "10.77.0.1:7700".parse().unwrap(),
            0x1234_5678,
        );
        // Summing the segment with its checksum and the pseudo-header gives 0xffff.
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&p[12..16]);
        pseudo[4..8].copy_from_slice(&p[16..20]);
        pseudo[9] = 6;
        pseudo[10..12].copy_from_slice(&20u16.to_be_bytes());
        assert_eq!(fold(sum16(&p[20..], sum16(&pseudo, 0))), 0);
        assert_eq!(p[33], 0x02);
        assert_eq!(u16::from_be_bytes([p[22], p[23]]), 7700);
    }

    #[test]
    fn networks() {
        assert_eq!(network("10.88.7.9/16").unwrap(), (0x0a58_0000, 0xffff));
        assert!(network("10.88.0.0").is_err());
        assert!(network("10.88.0.0/31").is_err());
    }
}
