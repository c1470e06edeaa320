// SPDX-License-Identifier: GPL-2.0

//! `qostest fuzz`: structure-aware fuzzing of the `openqos` generic netlink family
//! (testing.md's G3).
//!
//! Messages are generated from the ABI of `rust/src/abi.rs`: which attributes each
//! command requires and accepts ([`command_attrs`]), what a nest holds ([`nest_attrs`]),
//! each attribute's kind and range ([`POLICY`]), the limits. About a third are valid
//! (ports, groups and condition indexes from small pools, so that they meet each other's
//! objects and the traffic's), a third near-valid (one or two mistakes a tool could make:
//! a required attribute missing, a value one past its range, a payload of the wrong
//! width, a duplicate, an attribute of another command or a reply-only one, an unknown
//! type, a nest without `NLA_F_NESTED`, an unknown command, unusual netlink flags) and a
//! third malformed (bit flips, truncations, lying attribute lengths, deep nests, random
//! bytes, a netlink length that lies, several messages in one send).
//!
//! The generator draws from one random stream seeded by `--seed`, independent of the
//! kernel's answers, so a seed and a count replay a run exactly (`--from` sends only
//! the tail of it).
//!
//! The oracle, for every message:
//! - a request that asks for an answer (`NLM_F_ACK`, or a dump) and is well framed gets
//!   exactly one final answer (an error or acknowledgement, or a dump's `NLMSG_DONE`),
//!   within 5 s; the errno is a negative number of the errno range;
//! - every message the kernel sends is well-formed netlink: lengths within bounds, and
//!   attributes, nested ones included, within their parents;
//! - a refusal of a well-framed request for a known command carries an extack message
//!   (`EOPNOTSUPP`, `EPERM` and the out-of-memory errnos excepted: the generic netlink
//!   core and the allocator give none);
//! - and the suite's: no kernel report, nothing leaked after flush and unload.

use anyhow::{bail, Context, Result};
use netlink_packet_utils::nla::NlasIterator;
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};
use openqos::abi::abi::{
    attr, cmd, command_attrs, is_mutation, limits, nest_attrs, policy, AttrPolicy, Kind,
    FAMILY_VERSION, POLICY,
};
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;
use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Messages to send.
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// Seed of the random stream (default: from the clock; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// Generate but do not send the messages before this index (replaying the end of a
    /// run).
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// The ports valid messages use (rules, conditions, meters, groups, queues), e.g.
    /// the ports the suite's traffic goes through.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "7700,7701,7702,7703,7704"
    )]
    ports: Vec<u16>,
    /// Print every message and its answer.
    #[arg(long)]
    verbose: bool,
}

const NLA_F_NESTED: u16 = 1 << 15;
const NLA_F_NET_BYTEORDER: u16 = 1 << 14;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

const NLMSG_HDRLEN: usize = 16;
const GENL_HDRLEN: usize = 4;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_MULTI: u16 = 0x02;
const NLM_F_ACK: u16 = 0x04;
const NLM_F_ECHO: u16 = 0x08;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;

/// An attribute of a generated message: a leaf with its payload, or a nest of others.
/// The type carries its flags as they will be sent.
#[derive(Clone, Debug)]
pub(crate) enum Node {
    Leaf(u16, Vec<u8>),
    Nest(u16, Vec<Node>),
}

impl Node {
    fn ty(&self) -> u16 {
        match self {
            Node::Leaf(t, _) | Node::Nest(t, _) => *t,
        }
    }
}

/// Serializes `nodes`, recording where each attribute header starts (badreq's nests
/// are framed by it too).
pub(crate) fn emit(nodes: &[Node], out: &mut Vec<u8>, headers: &mut Vec<usize>) {
    for n in nodes {
        let start = out.len();
        headers.push(start);
        out.extend_from_slice(&[0; 4]);
        match n {
            Node::Leaf(_, v) => out.extend_from_slice(v),
            Node::Nest(_, kids) => emit(kids, out, headers),
        }
        // A nest longer than 64 KiB cannot be framed: its length wraps, as a careless
        // encoder's would.
        let len = (out.len() - start) as u16;
        out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        out[start + 2..start + 4].copy_from_slice(&n.ty().to_ne_bytes());
        out.resize((out.len() + 3) & !3, 0);
    }
}

/// What kind of message a generated one is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Valid,
    NearValid,
    Malformed,
}

/// One message to send: its netlink header fields and body (genl header onwards), or
/// several framed messages sent in one `sendmsg` (a batch).
struct Msg {
    class: Class,
    what: String,
    cmd: u8,
    flags: u16,
    body: Vec<u8>,
    /// `nlmsg_len` differs from the real length by this many bytes (malformed framing).
    len_lie: i32,
    /// The request is well framed for a known command of the family, so a refusal must
    /// carry a message.
    wants_message: bool,
}

struct Gen {
    rng: XorShiftRng,
    ports: Vec<u16>,
}

/// Widths of integer kinds.
fn width(k: Kind) -> Option<usize> {
    match k {
        Kind::U8 => Some(1),
        Kind::U16 => Some(2),
        Kind::U32 => Some(4),
        Kind::U64 => Some(8),
        _ => None,
    }
}

fn int_bytes(v: u64, w: usize) -> Vec<u8> {
    v.to_ne_bytes()[..w].to_vec()
}

/// The attributes that choose a condition's matcher (`MATCHERS` of the ABI, less `PRIO`).
const MATCHER_KINDS: [&[u16]; 4] = [
    &[attr::ADDR4, attr::MASK4],
    &[attr::ADDR6, attr::PREFIX6],
    &[attr::WEIGHT],
    &[attr::PATTERN],
];

/// Mutating commands, weighted: what a fuzz run mostly sends.
const COMMANDS: [(u8, u32); cmd::MAX as usize] = [
    (cmd::RULE_NEW, 10),
    (cmd::RULE_DEL, 4),
    (cmd::RULE_GET, 4),
    (cmd::COND_NEW, 14),
    (cmd::COND_DEL, 4),
    (cmd::FLUSH, 1),
    (cmd::COND_SET, 6),
    (cmd::RULESET_REPLACE, 6),
    (cmd::METER_NEW, 4),
    (cmd::METER_DEL, 3),
    (cmd::METER_GET, 4),
    (cmd::GROUP_NEW, 6),
    (cmd::GROUP_DEL, 3),
    (cmd::GROUP_GET, 4),
    (cmd::GROUP_SET, 6),
    (cmd::GROUP_PORT_ADD, 6),
    (cmd::GROUP_PORT_DEL, 3),
    (cmd::PRIO_SET, 5),
    (cmd::PRIO_DEL, 3),
    (cmd::PRIO_GET, 4),
];

fn is_get(c: u8) -> bool {
    !is_mutation(c)
}

impl Gen {
    fn new(seed: u64, ports: Vec<u16>) -> Self {
        Gen {
            rng: XorShiftRng::seed_from_u64(seed),
            ports,
        }
    }

    fn chance(&mut self, percent: u32) -> bool {
        self.rng.random_range(0..100) < percent
    }

    fn port(&mut self) -> u16 {
        if self.chance(92) {
            *self.ports.choose(&mut self.rng).expect("at least one port")
        } else {
            self.rng.random_range(1..=u16::MAX)
        }
    }

    /// A value in `p`'s range, at its edges often.
    fn edge(&mut self, p: &AttrPolicy) -> u64 {
        match self.rng.random_range(0..6) {
            0 => p.min,
            1 => p.max,
            2 => p.min.saturating_add(1).min(p.max),
            3 => p.max.saturating_sub(1).max(p.min),
            _ => self.rng.random_range(p.min..=p.max),
        }
    }

    /// A valid integer for attribute `ty`.
    fn int(&mut self, ty: u16, p: &AttrPolicy) -> u64 {
        match ty {
            attr::PORT | attr::OUT_PORT | attr::DEFAULT_PORT => self.port().into(),
            attr::GROUP_ID if self.chance(90) => self.rng.random_range(1..=4),
            attr::COND_INDEX if self.chance(85) => self.rng.random_range(1..=4),
            attr::ADDR4 => {
                let a: [u8; 4] = match self.rng.random_range(0..3) {
                    0 => [127, 0, 0, 1],
                    1 => [127, 0, 0, self.rng.random()],
                    _ => self.rng.random(),
                };
                u32::from_ne_bytes(a).into()
            }
            attr::MASK4 => {
                // Contiguous masks mostly; a mask with holes now and then.
                let m: u32 = if self.chance(90) {
                    let len = self.rng.random_range(0..=32u32);
                    u32::MAX.checked_shl(32 - len).unwrap_or(0)
                } else {
                    self.rng.random()
                };
                u32::from_ne_bytes(m.to_be_bytes()).into()
            }
            attr::RATE | attr::BURST if self.chance(70) => {
                *[1, 10, 1000, 65_536, 1 << 20, limits::MAX_RATE]
                    .choose(&mut self.rng)
                    .expect("nonempty")
            }
            attr::DATA_TIMEOUT_MS if self.chance(70) => self.rng.random_range(10..=200),
            attr::LEASE_MS if self.chance(70) => self.rng.random_range(100..=1000),
            attr::DEADLINE_MS if self.chance(70) => self.rng.random_range(0..=2000),
            _ => self.edge(p),
        }
    }

    /// A valid payload of `ty`.
    fn payload(&mut self, ty: u16) -> Vec<u8> {
        let p = policy(ty).expect("attribute of the ABI");
        match p.kind {
            Kind::Bytes(..) if ty == attr::ADDR6 => match self.rng.random_range(0..4) {
                0 => std::net::Ipv6Addr::LOCALHOST.octets().to_vec(),
                1 => std::net::Ipv4Addr::new(127, 0, 0, 1)
                    .to_ipv6_mapped()
                    .octets()
                    .to_vec(),
                _ => self.rng.random::<[u8; 16]>().to_vec(),
            },
            Kind::Bytes(..) if ty == attr::PATTERN => {
                let len = match self.rng.random_range(0..10) {
                    0 => limits::MAX_PATTERN,
                    1 => self.rng.random_range(9..=64),
                    _ => self.rng.random_range(1..=8),
                };
                const ALPHABET: &[u8] = b"GET /Host: premiumbasic\r\n";
                (0..len)
                    .map(|_| *ALPHABET.choose(&mut self.rng).expect("nonempty"))
                    .collect()
            }
            Kind::Bytes(min, max) => {
                let len = self.rng.random_range(usize::from(min)..=usize::from(max));
                (0..len).map(|_| self.rng.random()).collect()
            }
            k => {
                let w = width(k).unwrap_or(4);
                int_bytes(self.int(ty, p), w)
            }
        }
    }

    /// The matcher of a condition of a rule of type `rule_type` (any type if `None`),
    /// and a priority class now and then.
    fn matcher(&mut self, rule_type: Option<u8>) -> Vec<Node> {
        let kind = match rule_type {
            Some(1) if self.chance(90) => self.rng.random_range(0..2),
            Some(t) if self.chance(90) => usize::from(t) + 1,
            _ => self.rng.random_range(0..4),
        };
        let mut v: Vec<Node> = MATCHER_KINDS[kind.min(3)]
            .iter()
            .map(|&t| Node::Leaf(t, self.payload(t)))
            .collect();
        if self.chance(25) {
            v.push(Node::Leaf(attr::PRIO, self.payload(attr::PRIO)));
        }
        v
    }

    fn conditions(&mut self, rule_type: Option<u8>) -> Vec<Node> {
        let n = match self.rng.random_range(0..20) {
            0 => self.rng.random_range(10..=60),
            _ => self.rng.random_range(0..=3),
        };
        (0..n)
            .map(|_| {
                let mut kids = vec![Node::Leaf(attr::OUT_PORT, self.payload(attr::OUT_PORT))];
                kids.extend(self.matcher(rule_type));
                Node::Nest(attr::COND | NLA_F_NESTED, kids)
            })
            .collect()
    }

    /// A valid nest of type `ty` (`RULE`, `RULE_MORE`, `COND`, `PRIO_CLASS`).
    fn nest(&mut self, ty: u16) -> Node {
        let (req, opt) = nest_attrs(ty);
        let mut kids = Vec::new();
        let mut rule_type = None;
        for &a in req {
            let v = self.payload(a);
            if a == attr::RULE_TYPE {
                rule_type = v.first().copied();
            }
            kids.push(Node::Leaf(a, v));
        }
        if ty == attr::COND {
            kids.extend(self.matcher(None));
            return Node::Nest(ty | NLA_F_NESTED, kids);
        }
        for &a in opt {
            if a == attr::COND {
                kids.extend(self.conditions(rule_type));
            } else if self.chance(30) {
                kids.push(Node::Leaf(a, self.payload(a)));
            }
        }
        Node::Nest(ty | NLA_F_NESTED, kids)
    }

    /// A valid request of command `c`.
    fn valid(&mut self, c: u8) -> Vec<Node> {
        let (req, opt) = command_attrs(c);
        let mut v = Vec::new();
        let mut matched = false;
        let conditional = matches!(c, cmd::COND_NEW | cmd::COND_SET);
        for (&a, required) in req
            .iter()
            .map(|a| (a, true))
            .chain(opt.iter().map(|a| (a, false)))
        {
            let p = policy(a).expect("attribute of the ABI");
            if conditional && (MATCHER_KINDS.iter().any(|m| m.contains(&a)) || a == attr::PRIO) {
                if !matched {
                    matched = true;
                    v.extend(self.matcher(None));
                }
                continue;
            }
            // Gets mostly ask for one object; the others' optional attributes come in
            // now and then.
            let take = required || (!is_get(c) && self.chance(40)) || self.chance(20);
            if !take {
                continue;
            }
            if p.kind == Kind::Nested {
                let n = self.rng.random_range(0..=3);
                for _ in 0..n {
                    v.push(self.nest(a));
                }
            } else {
                v.push(Node::Leaf(a, self.payload(a)));
            }
        }
        v
    }

    fn command(&mut self) -> u8 {
        let total: u32 = COMMANDS.iter().map(|c| c.1).sum();
        let mut r = self.rng.random_range(0..total);
        for (c, w) in COMMANDS {
            if r < w {
                return c;
            }
            r -= w;
        }
        cmd::FLUSH
    }

    /// The usual flags of a request of `c`: an acknowledgement, or a dump for gets.
    fn flags(&mut self, c: u8) -> u16 {
        if is_get(c) && self.chance(50) {
            NLM_F_REQUEST | NLM_F_DUMP
        } else {
            NLM_F_REQUEST | NLM_F_ACK
        }
    }

    /// One mistake made to a valid request; returns what it was.
    fn mistake(&mut self, c: &mut u8, flags: &mut u16, v: &mut Vec<Node>) -> String {
        match self.rng.random_range(0..13) {
            0 if !v.is_empty() => {
                let i = self.rng.random_range(0..v.len());
                let t = v.remove(i).ty() & NLA_TYPE_MASK;
                format!("without {}", name(t))
            }
            1 if !v.is_empty() => {
                let i = self.rng.random_range(0..v.len());
                let d = v[i].clone();
                let t = d.ty() & NLA_TYPE_MASK;
                v.push(d);
                format!("{} twice", name(t))
            }
            2 => {
                // One past the range of an integer attribute this command takes.
                let (req, opt) = command_attrs(*c);
                let ints: Vec<&AttrPolicy> = req
                    .iter()
                    .chain(opt)
                    .filter_map(|&a| policy(a))
                    .filter(|p| width(p.kind).is_some())
                    .collect();
                let Some(p) = ints.choose(&mut self.rng).copied() else {
                    return "nothing wrong (no integer)".into();
                };
                let w = width(p.kind).expect("integer");
                let top = if w == 8 {
                    u64::MAX
                } else {
                    (1u64 << (8 * w)) - 1
                };
                let bad = if p.min > 0 && (p.max == top || self.chance(50)) {
                    p.min - 1
                } else if p.max < top {
                    p.max + 1
                } else {
                    return format!("nothing wrong ({} spans its type)", p.name);
                };
                v.retain(|n| n.ty() & NLA_TYPE_MASK != p.ty);
                v.push(Node::Leaf(p.ty, int_bytes(bad, w)));
                format!("{} = {bad}", p.name)
            }
            3 if !v.is_empty() => {
                let i = self.rng.random_range(0..v.len());
                if let Node::Leaf(t, p) = &mut v[i] {
                    let n = self.rng.random_range(0..=p.len() + 4);
                    p.resize(n, 0xa5);
                    format!("{} of {n} bytes", name(*t))
                } else {
                    "nothing wrong (a nest)".into()
                }
            }
            4 => {
                let t = *[0, attr::MAX + 1, attr::MAX + 7, NLA_TYPE_MASK]
                    .choose(&mut self.rng)
                    .expect("nonempty");
                v.push(Node::Leaf(t, self.rng.random::<[u8; 4]>().to_vec()));
                format!("unknown attribute {t}")
            }
            5 => {
                let rejects: Vec<u16> = POLICY
                    .iter()
                    .filter(|p| p.kind == Kind::Reject)
                    .map(|p| p.ty)
                    .collect();
                let t = *rejects
                    .choose(&mut self.rng)
                    .expect("reply-only attributes");
                v.push(Node::Leaf(t, self.rng.random::<[u8; 8]>().to_vec()));
                format!("reply-only {}", name(t))
            }
            6 => {
                // A request attribute of the ABI this command does not take.
                let t = self.rng.random_range(1..=attr::MAX);
                let p = policy(t).expect("in range");
                match p.kind {
                    Kind::Nested => v.push(self.nest(t)),
                    Kind::Reject => return "nothing wrong (drew a reply-only type)".into(),
                    _ => v.push(Node::Leaf(t, self.payload(t))),
                }
                format!("with {}", p.name)
            }
            7 => {
                // A nest without NLA_F_NESTED, or a leaf with it.
                for n in v.iter_mut() {
                    match n {
                        Node::Nest(t, _) => {
                            *t &= !NLA_F_NESTED;
                            return format!("{} not flagged nested", name(*t));
                        }
                        Node::Leaf(t, _) if self.chance(30) => {
                            *t |= NLA_F_NESTED;
                            return format!("{} flagged nested", name(*t & NLA_TYPE_MASK));
                        }
                        _ => {}
                    }
                }
                "nothing wrong (no nest)".into()
            }
            8 => {
                *c = *[0, cmd::MAX + 1, 255]
                    .choose(&mut self.rng)
                    .expect("nonempty");
                format!("command {c}")
            }
            9 => {
                *flags = NLM_F_REQUEST | NLM_F_DUMP;
                "dump flag".into()
            }
            10 => {
                *flags = NLM_F_REQUEST;
                "no ack".into()
            }
            11 => {
                *flags |= NLM_F_ECHO | (self.rng.random_range(0..16u16) << 8);
                format!("flags {flags:#x}")
            }
            _ => {
                // A content string with a NUL, empty, or one byte too long.
                let p = match self.rng.random_range(0..3) {
                    0 => b"Host\0x".to_vec(),
                    1 => Vec::new(),
                    _ => vec![b'a'; limits::MAX_PATTERN + 1],
                };
                let n = p.len();
                v.push(Node::Leaf(attr::PATTERN, p));
                format!("pattern of {n} bytes")
            }
        }
    }

    /// A byte-level corruption of a valid body; returns what it was.
    fn corrupt(&mut self, v: &[Node], body: &mut Vec<u8>, len_lie: &mut i32) -> String {
        let mut headers = Vec::new();
        let mut bytes = Vec::new();
        emit(v, &mut bytes, &mut headers);
        match self.rng.random_range(0..7) {
            0 => {
                let n = self.rng.random_range(1..=8);
                for _ in 0..n {
                    if bytes.is_empty() {
                        break;
                    }
                    let i = self.rng.random_range(0..bytes.len());
                    bytes[i] ^= 1 << self.rng.random_range(0..8);
                }
                body.extend(bytes);
                format!("{n} bits flipped")
            }
            1 => {
                let n = self.rng.random_range(0..=bytes.len());
                body.extend(&bytes[..n]);
                format!("cut to {n} bytes")
            }
            2 if !headers.is_empty() => {
                // An attribute whose length lies: too short for its header, past its
                // parent, or odd.
                let h = *headers.choose(&mut self.rng).expect("nonempty");
                let lie: u16 = match self.rng.random_range(0..4) {
                    0 => self.rng.random_range(0..4),
                    1 => u16::MAX,
                    2 => (bytes.len() - h + 4) as u16,
                    _ => self.rng.random(),
                };
                bytes[h..h + 2].copy_from_slice(&lie.to_ne_bytes());
                body.extend(bytes);
                format!("attribute at {h} claims {lie} bytes")
            }
            3 => {
                // Nests in nests: a condition holding conditions, deep.
                let depth = self.rng.random_range(2..=40);
                let mut n = Node::Leaf(attr::OUT_PORT, int_bytes(self.port().into(), 2));
                for _ in 0..depth {
                    let t = *[attr::COND, attr::RULE, attr::PRIO_CLASS]
                        .choose(&mut self.rng)
                        .expect("nonempty");
                    n = Node::Nest(t | NLA_F_NESTED, vec![n]);
                }
                let mut h = Vec::new();
                emit(&[n], body, &mut h);
                body.splice(0..0, bytes);
                format!("nests {depth} deep")
            }
            4 => {
                let n = self.rng.random_range(0..=256);
                body.extend((0..n).map(|_| self.rng.random::<u8>()));
                format!("{n} random bytes")
            }
            5 => {
                body.extend(bytes);
                *len_lie = *[-20, -4, -1, 1, 4, 4096]
                    .choose(&mut self.rng)
                    .expect("nonempty");
                format!("nlmsg_len {len_lie:+}")
            }
            _ => {
                // The genetlink header cut short: no attributes, 0 to 3 of its bytes.
                let n = self.rng.random_range(0..GENL_HDRLEN);
                body.truncate(n);
                format!("genl header of {n} bytes")
            }
        }
    }

    fn next(&mut self) -> Msg {
        let mut c = self.command();
        let mut flags = self.flags(c);
        let mut v = self.valid(c);
        let class = match self.rng.random_range(0..3) {
            0 => Class::Valid,
            1 => Class::NearValid,
            _ => Class::Malformed,
        };
        let mut what = String::new();
        let mut body = vec![c, FAMILY_VERSION, 0, 0];
        let mut len_lie = 0;
        match class {
            Class::Valid => {
                emit(&v, &mut body, &mut Vec::new());
            }
            Class::NearValid => {
                let n = if self.chance(80) { 1 } else { 2 };
                let mistakes: Vec<String> = (0..n)
                    .map(|_| self.mistake(&mut c, &mut flags, &mut v))
                    .collect();
                what = mistakes.join(", ");
                if self.chance(5) {
                    let ver = self.rng.random();
                    body[1] = ver;
                    what += &format!(", version {ver}");
                }
                body[0] = c;
                emit(&v, &mut body, &mut Vec::new());
            }
            Class::Malformed => {
                what = self.corrupt(&v, &mut body, &mut len_lie);
            }
        }
        let framed = len_lie == 0 && body.len() >= GENL_HDRLEN;
        let wants_message = class != Class::Malformed
            && framed
            && (1..=cmd::MAX).contains(&c)
            && flags & NLM_F_DUMP != NLM_F_DUMP;
        Msg {
            class,
            what,
            cmd: c,
            flags,
            body,
            len_lie,
            wants_message,
        }
    }
}

fn name(t: u16) -> String {
    policy(t).map_or_else(|| format!("attribute {t}"), |p| p.name.to_string())
}

/// What the kernel answered one request.
#[derive(Default)]
struct Answer {
    /// Final answers (errors, acknowledgements, `NLMSG_DONE`): errno or 0.
    finals: Vec<(i32, Option<String>)>,
    /// Data messages (dump parts, replies).
    data: usize,
}

/// Problems with the kernel's answers.
struct Oracle {
    seed: u64,
    violations: Vec<String>,
}

impl Oracle {
    fn violation(&mut self, index: u64, m: &Msg, why: String) {
        let line = format!(
            "VIOLATION seed={} message={index} class={:?} cmd={} flags={:#x} ({}): {why}; body {}",
            self.seed,
            m.class,
            m.cmd,
            m.flags,
            m.what,
            hex(&m.body[..m.body.len().min(96)])
        );
        println!("{line}");
        self.violations.push(line);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Checks that `buf` holds attributes that stay within it, recursing into nests.
fn well_formed_attrs(buf: &[u8], depth: usize) -> std::result::Result<(), String> {
    for nla in NlasIterator::new(buf) {
        let nla = nla.map_err(|e| format!("attributes: {e}"))?;
        if nla.nested_flag() {
            if depth > 8 {
                return Err("nests deeper than 8".into());
            }
            well_formed_attrs(nla.value(), depth + 1)?;
        }
    }
    Ok(())
}

/// The extack message of an error's TLVs.
fn ext_message(tlvs: &[u8]) -> Option<String> {
    let nla = NlasIterator::new(tlvs)
        .map_while(std::result::Result::ok)
        .find(|a| a.kind() == NLMSGERR_ATTR_MSG)?;
    let s = nla.value().split(|&b| b == 0).next().unwrap_or(&[]);
    Some(String::from_utf8_lossy(s).into_owned())
}

fn nlmsg(ty: u16, flags: u16, seq: u32, body: &[u8], len_lie: i32) -> Vec<u8> {
    let len = (NLMSG_HDRLEN + body.len()) as i64 + i64::from(len_lie);
    let len = len.clamp(0, i64::from(u32::MAX)) as u32;
    let mut v = Vec::with_capacity(NLMSG_HDRLEN + body.len());
    v.extend_from_slice(&len.to_ne_bytes());
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&seq.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v.extend_from_slice(body);
    v
}

struct Wire {
    sock: Socket,
    family: u16,
    seq: u32,
    rx: Vec<u8>,
}

impl Wire {
    fn open(family: u16) -> Result<Self> {
        let mut sock = Socket::new(NETLINK_GENERIC)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        sock.set_ext_ack(true)?;
        sock.set_cap_ack(true)?;
        sock.set_rx_buf_sz(4 << 20)?;
        nix::sys::socket::setsockopt(
            &sock.as_fd(),
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(5, 0),
        )?;
        Ok(Wire {
            sock,
            family,
            seq: 0,
            rx: Vec::with_capacity(256 * 1024),
        })
    }

    /// Sends `m` and, in a second send, a `NLMSG_NOOP` that asks for an acknowledgement;
    /// collects what the kernel answered `m` until that acknowledgement has come and a
    /// dump `m` started has ended. Malformed replies are errors.
    fn exchange(&mut self, m: &Msg) -> std::result::Result<Answer, String> {
        self.seq = self.seq.wrapping_add(2);
        let seq = self.seq;
        let sync = seq + 1;
        let frame = nlmsg(self.family, m.flags, seq, &m.body, m.len_lie);
        // The kernel may refuse a frame outright (a length that lies): that is an answer.
        let mut a = Answer::default();
        if let Err(e) = self.sock.send(&frame, 0) {
            a.finals.push((-e.raw_os_error().unwrap_or(0), None));
        }
        let noop = nlmsg(NLMSG_NOOP, NLM_F_REQUEST | NLM_F_ACK, sync, &[], 0);
        self.sock
            .send(&noop, 0)
            .map_err(|e| format!("sending the sync message: {e}"))?;
        let (mut synced, mut dumping) = (false, false);
        let t0 = Instant::now();
        while !synced || dumping {
            if t0.elapsed() > Duration::from_secs(5) {
                return Err(format!(
                    "no end within 5 s (synced {synced}, dump running {dumping})"
                ));
            }
            self.rx.clear();
            match self.sock.recv(&mut self.rx, 0) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc_enobufs()) => {
                    // The socket overflowed: replies were lost, this one's included.
                    return Err("receive buffer overrun (ENOBUFS)".into());
                }
                Err(e) => return Err(format!("receiving: {e}")),
            }
            let mut off = 0;
            let buf = &self.rx;
            while off + NLMSG_HDRLEN <= buf.len() {
                let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4")) as usize;
                let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                let flags = u16::from_ne_bytes([buf[off + 6], buf[off + 7]]);
                let s = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().expect("4"));
                if len < NLMSG_HDRLEN || off + len > buf.len() {
                    return Err(format!("reply claims {len} of {} bytes", buf.len() - off));
                }
                let payload = &buf[off + NLMSG_HDRLEN..off + len];
                off += (len + 3) & !3;
                match ty {
                    NLMSG_ERROR | NLMSG_DONE => {
                        if payload.len() < 4 {
                            return Err(format!("final answer of {} bytes", payload.len()));
                        }
                        let code = i32::from_ne_bytes(payload[..4].try_into().expect("4"));
                        if !(-4095..=0).contains(&code) {
                            return Err(format!("errno {code} outside the errno range"));
                        }
                        // An error echoes the request's header (capped); a dump's end
                        // carries its TLVs right after the code.
                        let tlvs = match ty {
                            NLMSG_ERROR if flags & NLM_F_ACK_TLVS != 0 => {
                                payload.get(4 + NLMSG_HDRLEN..).unwrap_or(&[])
                            }
                            NLMSG_DONE => payload.get(4..).unwrap_or(&[]),
                            _ => &[],
                        };
                        if s == sync && ty == NLMSG_ERROR {
                            synced = true;
                            if code != 0 {
                                return Err(format!("the sync message got errno {code}"));
                            }
                        } else if s == seq {
                            if ty == NLMSG_DONE {
                                dumping = false;
                            }
                            a.finals.push((-code, ext_message(tlvs)));
                        }
                    }
                    t if t == self.family => {
                        if payload.len() < GENL_HDRLEN {
                            return Err(format!("reply of {} bytes", payload.len()));
                        }
                        well_formed_attrs(&payload[GENL_HDRLEN..], 0)?;
                        if s == seq {
                            a.data += 1;
                            if flags & NLM_F_MULTI != 0 && a.finals.is_empty() {
                                dumping = true;
                            }
                        }
                    }
                    t => return Err(format!("message of type {t} from the kernel")),
                }
            }
        }
        Ok(a)
    }
}

fn libc_enobufs() -> i32 {
    nix::errno::Errno::ENOBUFS as i32
}

fn errno_name(e: i32) -> String {
    if e == 0 {
        return "ok".into();
    }
    format!("{:?}", nix::errno::Errno::from_raw(e))
}

pub fn fuzz(a: &FuzzArgs) -> Result<()> {
    if a.ports.is_empty() {
        bail!("--ports needs at least one port");
    }
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!("fuzz: seed={seed} count={} from={}", a.count, a.from);
    let family = openqos::Client::connect()
        .context("resolving the openqos family")?
        .family_id();
    let mut wire = Wire::open(family)?;
    let mut g = Gen::new(seed, a.ports.clone());
    let mut o = Oracle {
        seed,
        violations: Vec::new(),
    };
    let mut by_class: BTreeMap<Class, u64> = BTreeMap::new();
    let mut by_answer: BTreeMap<String, u64> = BTreeMap::new();
    let (mut sent, mut data, mut silent) = (0u64, 0u64, 0u64);
    let t0 = Instant::now();
    for i in 0..a.count {
        let m = g.next();
        if i < a.from {
            continue;
        }
        sent += 1;
        *by_class.entry(m.class).or_default() += 1;
        let answer = match wire.exchange(&m) {
            Ok(x) => x,
            Err(why) => {
                o.violation(i, &m, why);
                // Start over on a fresh socket: whatever was queued is lost.
                wire = Wire::open(family)?;
                if o.violations.len() >= 20 {
                    break;
                }
                continue;
            }
        };
        data += answer.data as u64;
        let framed = m.len_lie == 0 && m.body.len() >= GENL_HDRLEN;
        // (`NLM_F_MATCH` or `NLM_F_ROOT` alone is no dump.)
        let asks = m.flags & NLM_F_ACK != 0 || m.flags & NLM_F_DUMP == NLM_F_DUMP;
        if answer.finals.len() > 1 {
            o.violation(i, &m, format!("{} final answers", answer.finals.len()));
        } else if answer.finals.is_empty() && framed && asks && m.class != Class::Malformed {
            o.violation(i, &m, "no answer".into());
        }
        match answer.finals.first() {
            None => silent += 1,
            Some((e, msg)) => {
                *by_answer.entry(errno_name(*e)).or_default() += 1;
                let exempt = [
                    nix::errno::Errno::EOPNOTSUPP,
                    nix::errno::Errno::EPERM,
                    nix::errno::Errno::ENOMEM,
                    nix::errno::Errno::ENOBUFS,
                ]
                .iter()
                .any(|x| *x as i32 == *e);
                if *e != 0 && m.wants_message && !exempt && msg.as_deref().unwrap_or("").is_empty()
                {
                    o.violation(
                        i,
                        &m,
                        format!("refused with {} and no message", errno_name(*e)),
                    );
                }
            }
        }
        if a.verbose {
            println!(
                "{i} {:?} cmd={} flags={:#x} ({}) -> {:?} data={}",
                m.class, m.cmd, m.flags, m.what, answer.finals, answer.data
            );
        }
        if o.violations.len() >= 20 {
            break;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let classes: Vec<String> = by_class.iter().map(|(c, n)| format!("{c:?}:{n}")).collect();
    let answers: Vec<String> = by_answer.iter().map(|(e, n)| format!("{e}:{n}")).collect();
    println!(
        "fuzz: seed={seed} sent={sent} classes={} answers={} unanswered={silent} data={data} violations={} seconds={secs:.1} per_second={:.0}",
        classes.join(","),
        answers.join(","),
        o.violations.len(),
        sent as f64 / secs.max(1e-9)
    );
    if !o.violations.is_empty() {
        bail!(
            "{} violations (replay: qostest fuzz --seed {seed} --count {})",
            o.violations.len(),
            a.count
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_its_messages() {
        let ports = vec![7700, 7701];
        let mut a = Gen::new(42, ports.clone());
        let mut b = Gen::new(42, ports);
        for _ in 0..2000 {
            let (x, y) = (a.next(), b.next());
            assert_eq!(
                (x.cmd, x.flags, &x.body, x.len_lie),
                (y.cmd, y.flags, &y.body, y.len_lie)
            );
        }
    }

    #[test]
    fn valid_messages_follow_the_abi() {
        let mut g = Gen::new(7, vec![7700]);
        let mut seen = 0;
        for _ in 0..5000 {
            let m = g.next();
            if m.class != Class::Valid {
                continue;
            }
            seen += 1;
            assert_eq!(m.body[1], FAMILY_VERSION);
            well_formed_attrs(&m.body[GENL_HDRLEN..], 0).unwrap();
            // Every top-level attribute is one the command takes, its integers in range.
            let (req, opt) = command_attrs(m.cmd);
            let mut off = GENL_HDRLEN;
            let mut present = Vec::new();
            while off < m.body.len() {
                let len = usize::from(u16::from_ne_bytes([m.body[off], m.body[off + 1]]));
                let ty = u16::from_ne_bytes([m.body[off + 2], m.body[off + 3]]) & NLA_TYPE_MASK;
                assert!(
                    req.contains(&ty) || opt.contains(&ty),
                    "cmd {} attr {ty}",
                    m.cmd
                );
                let p = policy(ty).unwrap();
                if let Some(w) = width(p.kind) {
                    assert_eq!(len, 4 + w);
                    let mut b = [0u8; 8];
                    b[..w].copy_from_slice(&m.body[off + 4..off + 4 + w]);
                    let v = u64::from_ne_bytes(b);
                    assert!(p.min <= v && v <= p.max, "{} = {v}", p.name);
                }
                present.push(ty);
                off += (len + 3) & !3;
            }
            for r in req {
                assert!(present.contains(r), "cmd {} lacks {}", m.cmd, name(*r));
            }
        }
        assert!(seen > 1000);
    }

    #[test]
    fn every_class_and_command_comes_up() {
        let mut g = Gen::new(1, vec![7700]);
        let mut classes = std::collections::BTreeSet::new();
        let mut cmds = std::collections::BTreeSet::new();
        for _ in 0..20_000 {
            let m = g.next();
            classes.insert(m.class);
            cmds.insert(m.body.first().copied().unwrap_or(0));
        }
        assert_eq!(classes.len(), 3);
        for c in 1..=cmd::MAX {
            assert!(cmds.contains(&c), "command {c} never sent");
        }
    }

    #[test]
    fn lying_lengths_are_caught() {
        assert!(well_formed_attrs(&[8, 0, 1, 0, 0, 0, 0, 0], 0).is_ok());
        assert!(well_formed_attrs(&[9, 0, 1, 0, 0, 0, 0, 0], 0).is_err());
        assert!(well_formed_attrs(&[2, 0, 1, 0], 0).is_err());
        // A nest holding a lying child.
        assert!(well_formed_attrs(&[12, 0, 11, 0x80, 12, 0, 1, 0, 0, 0, 0, 0], 0).is_err());
    }
}
