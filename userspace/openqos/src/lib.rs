// SPDX-License-Identifier: GPL-2.0

//! Client library for the openqos kernel module.
//!
//! A typed API over the `openqos` generic netlink family: rules, conditions and their
//! counters, meters, socket groups. The attribute numbers, limits and value ranges come from `openqos-abi`, the
//! same source the kernel module compiles, and every value is checked against that policy
//! before it is sent, so a tool never sends what the kernel would refuse for its range.

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_generic::{
    ctrl::{nlas::GenlCtrlAttrs, GenlCtrl, GenlCtrlCmd},
    GenlFamily, GenlHeader, GenlMessage,
};
use netlink_packet_utils::{
    nla::{Nla, NlaBuffer, NlasIterator},
    DecodeError, Emitable, ParseableParametrized,
};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};
use serde::Serialize;
use std::net::{Ipv4Addr, Ipv6Addr};

pub use openqos_abi as abi;
use openqos_abi::abi::{
    attr, cmd, group_flags, group_stat, group_type, limits, meter_flags, meter_stat, prio_flags,
    prio_stat, replace_flags, rule_flags, rule_type, stat,
};

/// Errors of the client library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `openqos` family is not registered: the module is not loaded.
    #[error("the openqos kernel module is not loaded (modprobe openqos / insmod openqos.ko)")]
    ModuleNotLoaded,
    /// The loaded module speaks another version of the ABI than these tools.
    #[error("the loaded openqos module speaks ABI version {module}, these tools speak version {tools}: load the module of the same openqos release as the tools (rmmod openqos; modprobe openqos), or use the tools of the module's release")]
    AbiMismatch {
        /// The module's ABI version (the family's version).
        module: u8,
        /// The tools' ABI version.
        tools: u8,
    },
    /// The kernel refused the request.
    #[error("{}", kernel_message(*errno, message, attr))]
    Kernel {
        /// Positive errno.
        errno: i32,
        /// The extack message, if the kernel sent one.
        message: Option<String>,
        /// The attribute the kernel blamed, by name.
        attr: Option<&'static str>,
        /// Where that attribute starts in the request's attributes (after the netlink
        /// and generic netlink headers).
        offset: Option<usize>,
    },
    /// A value outside the kernel's policy, refused before sending.
    #[error("{name}: {value} is out of range ({min}..={max})")]
    OutOfRange {
        /// Attribute name.
        name: &'static str,
        /// The value.
        value: u64,
        /// Smallest accepted.
        min: u64,
        /// Largest accepted.
        max: u64,
    },
    /// Socket error.
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// Malformed reply.
    #[error("malformed netlink reply: {0}")]
    Decode(String),
    /// A value the kernel would refuse, caught before sending.
    #[error("{0}")]
    Invalid(&'static str),
    /// `replace_rules`: the kernel refused the rule at `index` of the set.
    #[error("rule {} of the set: {source}", index + 1)]
    InRule {
        /// 0-based position of the rule in the set.
        index: usize,
        /// The kernel's error.
        source: Box<Error>,
    },
}

fn kernel_message(errno: i32, message: &Option<String>, attr: &Option<&'static str>) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    match (message, attr) {
        (Some(m), Some(a)) => format!("{m} (attribute {a}): {text}"),
        (Some(m), None) => format!("{m}: {text}"),
        (None, Some(a)) => format!("attribute {a}: {text}"),
        (None, None) => text,
    }
}

impl Error {
    /// The errno behind a kernel refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { errno, .. } => Some(*errno),
            Error::InRule { source, .. } => source.errno(),
            _ => None,
        }
    }
}

/// Result type of the library.
pub type Result<T> = std::result::Result<T, Error>;

/// The rule types of the paper (`-A a|c|d`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleType {
    /// Source address conditions.
    Address,
    /// Strings in the first data.
    Content,
    /// Weighted random choice.
    Probabilistic,
}

impl RuleType {
    /// The ABI value.
    pub fn to_abi(self) -> u8 {
        match self {
            RuleType::Address => rule_type::ADDRESS,
            RuleType::Content => rule_type::CONTENT,
            RuleType::Probabilistic => rule_type::PROBABILISTIC,
        }
    }

    fn from_abi(v: u8) -> Result<Self> {
        match v {
            rule_type::ADDRESS => Ok(RuleType::Address),
            rule_type::CONTENT => Ok(RuleType::Content),
            rule_type::PROBABILISTIC => Ok(RuleType::Probabilistic),
            _ => Err(Error::Decode(format!("unknown rule type {v}"))),
        }
    }

    /// The paper's letter.
    pub fn letter(self) -> char {
        match self {
            RuleType::Address => 'a',
            RuleType::Content => 'c',
            RuleType::Probabilistic => 'd',
        }
    }
}

/// What a condition tests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Matcher {
    /// `(client & mask) == addr`.
    Ipv4 {
        /// Address.
        addr: Ipv4Addr,
        /// Mask.
        mask: Ipv4Addr,
    },
    /// The first `prefix` bits equal.
    Ipv6 {
        /// Address.
        addr: Ipv6Addr,
        /// Prefix length.
        prefix: u8,
    },
    /// Probabilistic rules: taken with probability `weight / 10000`.
    Weight {
        /// Weight in 1/10000.
        weight: u16,
    },
    /// Content rules: the client's first data contains this string.
    Content {
        /// The string (1 to 255 bytes, no NUL).
        pattern: String,
    },
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Matcher::Ipv4 { addr, mask } => match openqos_abi::addr::mask_len(u32::from(*mask)) {
                Some(l) => write!(f, "{addr}/{l}"),
                None => write!(f, "{addr}/{mask}"),
            },
            Matcher::Ipv6 { addr, prefix } => write!(f, "{addr}/{prefix}"),
            Matcher::Weight { weight } => {
                write!(f, "weight {weight} ({}.{:02}%)", weight / 100, weight % 100)
            }
            Matcher::Content { pattern } => write!(f, "string {}", pattern.escape_debug()),
        }
    }
}

/// A condition of a rule, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Condition {
    /// 1-based position (what `delete_condition` takes).
    pub index: u32,
    /// What it matches.
    pub matcher: Matcher,
    /// Where matching connections go.
    pub out_port: u16,
    /// Priority class at the outgoing port (if it has a prioritized queue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prio: Option<u8>,
    /// Connections that matched.
    pub hits: u64,
}

/// Counters of a rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RuleStats {
    /// Connections sent to the default port.
    pub default_hits: u64,
    /// Connections moved to a server.
    pub forwarded: u64,
    /// Refused: nothing listened on the outgoing port.
    pub no_listener: u64,
    /// Refused: the server's accept queue was full.
    pub queue_full: u64,
    /// Refused: the server's socket family could not take the connection.
    pub family_mismatch: u64,
    /// Refused for other reasons.
    pub other_refused: u64,
    /// Waiting in the module's own queues right now (content rules: for their data).
    pub waiting: u64,
    /// Content rules: sent to the default port after the data timeout.
    pub timed_out: u64,
    /// Content rules: sent to the default port because too many were waiting for data.
    pub pending_full: u64,
    /// Content rules: bytes of data the automaton stepped through.
    pub scanned: u64,
    /// Content rules: looks at connections' data.
    pub looks: u64,
}

/// Readings of a metered listening port (the paper's sensors).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Meter {
    /// The listening port.
    pub port: u16,
    /// A rule sends connections to the port.
    pub auto: bool,
    /// Metered on request ([`Client::create_meter`]).
    pub requested: bool,
    /// A member of a socket group.
    pub grouped: bool,
    /// The port has a prioritized queue (`tcpchains -Q`).
    pub prio: bool,
    /// Connections in the accept queues of the port's listeners now.
    pub waiting: u64,
    /// How long the oldest of them has waited now (from the end of its handshake), ns;
    /// 0 when none waits: the delay the next `accept()` would count.
    pub oldest_ns: u64,
    /// Connections the servers accepted from the port since it is metered.
    pub accepted: u64,
    /// Sum of the connections' queueing delays (end of handshake to `accept()`), ns.
    pub delay_ns: u64,
    /// Bytes the servers read from connections accepted from the port.
    pub rx_bytes: u64,
    /// Bytes the servers wrote to them (`sendfile` and `splice` included).
    pub tx_bytes: u64,
    /// Connections accepted from the port and still open.
    pub open: u64,
    /// Listening sockets of the port the meter sees.
    pub listeners: u64,
    /// Delay histogram: counts per bucket of [`openqos_abi::abi::hist`].
    #[serde(skip)]
    pub hist: Vec<u64>,
}

impl Meter {
    /// The `q`-quantile (thousandths) of the queueing delay, in microseconds.
    pub fn delay_quantile_us(&self, q: u32) -> Option<u64> {
        openqos_abi::abi::hist::quantile(&self.hist, q)
    }

    /// The mean queueing delay, in microseconds.
    pub fn mean_delay_us(&self) -> Option<u64> {
        (self.accepted > 0).then(|| self.delay_ns / self.accepted / 1000)
    }
}

/// The type of a socket group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupType {
    /// Accept ratio across the member ports, by weight.
    Ratio,
    /// Connections per second the member ports accept together.
    Rate,
    /// Bytes per second all connections accepted from the member ports send together.
    Output,
}

impl GroupType {
    /// The ABI value.
    pub fn to_abi(self) -> u8 {
        match self {
            GroupType::Ratio => group_type::RATIO,
            GroupType::Rate => group_type::RATE,
            GroupType::Output => group_type::OUTPUT,
        }
    }

    /// From the ABI value.
    pub fn from_abi(v: u8) -> Result<Self> {
        match v {
            group_type::RATIO => Ok(GroupType::Ratio),
            group_type::RATE => Ok(GroupType::Rate),
            group_type::OUTPUT => Ok(GroupType::Output),
            _ => Err(Error::Decode(format!("unknown group type {v}"))),
        }
    }

    /// Its name (`ratio`, `rate`, `output`).
    pub fn name(self) -> &'static str {
        group_type::NAMES[usize::from(self.to_abi()) - 1].1
    }
}

impl std::str::FromStr for GroupType {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "ratio" => Ok(GroupType::Ratio),
            "rate" => Ok(GroupType::Rate),
            "output" => Ok(GroupType::Output),
            _ => Err(format!("unknown group type {s:?} (ratio, rate, output)")),
        }
    }
}

/// A member port of a socket group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GroupMember {
    /// The listening port.
    pub port: u16,
    /// Weight (accept-ratio groups).
    pub weight: u16,
    /// Connections accepted (ratio, rate) or bytes sent (output) through the group
    /// from this port.
    pub admitted: u64,
    /// Attached as an FTP control port (its clients' passive transfers join the group
    /// even if the group itself does not watch FTP).
    pub ftp: bool,
}

/// A socket group, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Group {
    /// Its number.
    pub id: u32,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: GroupType,
    /// Connections or bytes per second (rate and output groups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    /// Most tokens the bucket holds (rate and output groups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// Every member port is an FTP control port: passive-mode data ports join the group.
    pub ftp: bool,
    /// Member ports, in the order attached.
    pub members: Vec<GroupMember>,
    /// Connections accepted or bytes sent through the group.
    pub admitted: u64,
    /// Times a caller was held back for lack of quota.
    pub held: u64,
    /// Tasks sleeping on the quota now.
    pub sleeping: u64,
    /// Whole tokens in the bucket now.
    pub tokens: u64,
    /// FTP data listeners that joined the group.
    pub ftp_joined: u64,
    /// Times the group's timer ran.
    pub timer_runs: u64,
    /// Milliseconds left of a leased setting ([`GroupSettings::lease_ms`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u32>,
    /// The rate the group goes back to when its lease runs out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_rate: Option<u64>,
    /// Leases that ran out.
    pub lease_expired: u64,
}

/// Settings of a socket group to change ([`Client::set_group`]); `None` keeps one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupSettings {
    /// Connections or bytes per second.
    pub rate: Option<u64>,
    /// Bucket size.
    pub burst: Option<u64>,
    /// Watch FTP passive replies.
    pub ftp: Option<bool>,
    /// The rate and burst hold only this many milliseconds unless renewed; then the
    /// kernel puts back the setting from before the first leased change.
    pub lease_ms: Option<u32>,
}

/// Options of a new rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleOptions {
    /// One dual-stack `[::]` listener instead of separate IPv4 and IPv6 ones.
    pub dual_stack: bool,
    /// Content rules: match strings ignoring ASCII case.
    pub nocase: bool,
    /// Content rules: milliseconds to wait for decisive data (kernel default 2000).
    pub data_timeout_ms: Option<u32>,
    /// Priority class of the connections sent to the default port.
    pub default_prio: Option<u8>,
}

/// A rule as configured: what [`Client::replace_rules`] takes, and what
/// [`Rule::config`] gives back (counters aside).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleConfig {
    /// Incoming port.
    pub port: u16,
    /// Type.
    pub kind: RuleType,
    /// Default outgoing port.
    pub default_port: u16,
    /// Options.
    pub opts: RuleOptions,
    /// Conditions in priority order: matcher, outgoing port and priority class.
    pub conditions: Vec<(Matcher, u16, Option<u8>)>,
}

/// A rule, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Incoming port.
    pub port: u16,
    /// Type.
    #[serde(rename = "type")]
    pub kind: RuleType,
    /// Default outgoing port.
    pub default_port: u16,
    /// Priority class at the default port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_prio: Option<u8>,
    /// One dual-stack listener instead of separate IPv4 and IPv6 ones.
    pub dual_stack: bool,
    /// Content rules: strings match ignoring ASCII case.
    pub nocase: bool,
    /// Content rules: milliseconds a connection may wait for decisive data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_timeout_ms: Option<u32>,
    /// Content rules: states of the rule's automaton.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub automaton_states: Option<u32>,
    /// Conditions in priority order.
    pub conditions: Vec<Condition>,
    /// Counters.
    pub stats: RuleStats,
}

/// What [`Client::set_prio`] sets (`None`: unchanged, or the default for a new queue).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrioSettings {
    /// Number of classes (only when the queue is created; default 3).
    pub classes: Option<u8>,
    /// Most connections held, all classes together (default 256).
    pub cap: Option<u32>,
    /// Most connections released into the server's queue and not yet accepted
    /// (default 2).
    pub depth: Option<u32>,
    /// Refuse an arrival whose expected wait already exceeds its class's deadline.
    pub early_refuse: Option<bool>,
    /// Deadlines to set: `(class, milliseconds)`, `None` for no deadline.
    pub deadlines: Vec<(u8, Option<u32>)>,
}

/// One class of a prioritized port, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PrioClass {
    /// The class (0 highest).
    pub class: u8,
    /// Relative deadline, milliseconds since the handshake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u32>,
    /// Connections held now.
    pub waiting: u64,
    /// Connections that entered the queue.
    pub admitted: u64,
    /// Connections released into the server's queue.
    pub released: u64,
    /// Held connections reset to make room for a higher class.
    pub pushed_out: u64,
    /// Held connections reset at the deadline.
    pub expired: u64,
    /// Arrivals refused (queue full with nothing lower to push out, or too late).
    pub refused: u64,
    /// Sum of the waits of the released connections, nanoseconds.
    pub delay_ns: u64,
    /// Held connections reset because no listener could take them.
    pub lost: u64,
    /// Waits of the released connections (buckets of `abi::hist`).
    #[serde(skip)]
    pub hist: Vec<u64>,
}

impl PrioClass {
    /// The `q`-quantile (thousandths) of the waits, in microseconds.
    pub fn delay_quantile_us(&self, q: u32) -> Option<u64> {
        openqos_abi::abi::hist::quantile(&self.hist, q)
    }

    /// The mean wait, in microseconds.
    pub fn mean_delay_us(&self) -> Option<u64> {
        (self.released > 0).then(|| self.delay_ns / self.released / 1000)
    }
}

/// A prioritized port, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PrioPort {
    /// The server's port.
    pub port: u16,
    /// Most connections held.
    pub cap: u32,
    /// Most connections released and not yet accepted.
    pub depth: u32,
    /// Arrivals whose expected wait exceeds their deadline are refused at once.
    pub early_refuse: bool,
    /// Its classes, highest first.
    pub classes: Vec<PrioClass>,
}

impl PrioPort {
    /// The settings that recreate this queue (what `tcpchains -S` saves).
    pub fn settings(&self) -> PrioSettings {
        PrioSettings {
            classes: Some(self.classes.len() as u8),
            cap: Some(self.cap),
            depth: Some(self.depth),
            early_refuse: Some(self.early_refuse),
            deadlines: self
                .classes
                .iter()
                .map(|c| (c.class, c.deadline_ms))
                .collect(),
        }
    }
}

/// An attribute of a request or reply.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Attr {
    U8(u16, u8),
    U16(u16, u16),
    U32(u16, u32),
    U64(u16, u64),
    Raw(u16, Vec<u8>),
    /// Sent with `NLA_F_NESTED`, which the kernel's strict validation requires.
    Nested(u16, Vec<Attr>),
    /// Raw bytes sent with `NLA_F_NESTED` (for testing the kernel's validation).
    RawNested(u16, Vec<u8>),
}

impl Nla for Attr {
    fn value_len(&self) -> usize {
        match self {
            Attr::U8(..) => 1,
            Attr::U16(..) => 2,
            Attr::U32(..) => 4,
            Attr::U64(..) => 8,
            Attr::Raw(_, v) | Attr::RawNested(_, v) => v.len(),
            Attr::Nested(_, v) => v.as_slice().buffer_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Attr::U8(k, _)
            | Attr::U16(k, _)
            | Attr::U32(k, _)
            | Attr::U64(k, _)
            | Attr::Raw(k, _)
            | Attr::RawNested(k, _)
            | Attr::Nested(k, _) => *k,
        }
    }

    fn is_nested(&self) -> bool {
        matches!(self, Attr::Nested(..) | Attr::RawNested(..))
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            Attr::U8(_, v) => buf[0] = *v,
            Attr::U16(_, v) => buf[..2].copy_from_slice(&v.to_ne_bytes()),
            Attr::U32(_, v) => buf[..4].copy_from_slice(&v.to_ne_bytes()),
            Attr::U64(_, v) => buf[..8].copy_from_slice(&v.to_ne_bytes()),
            Attr::Raw(_, v) | Attr::RawNested(_, v) => buf[..v.len()].copy_from_slice(v),
            Attr::Nested(_, v) => v.as_slice().emit(buf),
        }
    }
}

/// The attributes of a rule's settings (`RULE_NEW`, and a `RULE` of a rule set).
fn rule_attrs(
    port: u16,
    kind: RuleType,
    default_port: u16,
    opts: &RuleOptions,
) -> Result<Vec<Attr>> {
    let mut flags = 0;
    if opts.dual_stack {
        flags |= rule_flags::DUAL_STACK;
    }
    if opts.nocase {
        flags |= rule_flags::NOCASE;
    }
    let mut attrs = vec![
        u16_attr(attr::PORT, port)?,
        Attr::U8(attr::RULE_TYPE, kind.to_abi()),
        u16_attr(attr::DEFAULT_PORT, default_port)?,
        Attr::U32(attr::RULE_FLAGS, flags),
    ];
    if let Some(t) = opts.data_timeout_ms {
        check(attr::DATA_TIMEOUT_MS, t.into())?;
        attrs.push(Attr::U32(attr::DATA_TIMEOUT_MS, t));
    }
    if let Some(p) = opts.default_prio {
        check(attr::DEFAULT_PRIO, p.into())?;
        attrs.push(Attr::U8(attr::DEFAULT_PRIO, p));
    }
    Ok(attrs)
}

/// The attributes of a condition: its matcher, outgoing port and priority class.
fn cond_attrs(matcher: &Matcher, out_port: u16, prio: Option<u8>) -> Result<Vec<Attr>> {
    let mut attrs = vec![u16_attr(attr::OUT_PORT, out_port)?];
    if let Some(p) = prio {
        check(attr::PRIO, p.into())?;
        attrs.push(Attr::U8(attr::PRIO, p));
    }
    match matcher {
        Matcher::Ipv4 { addr, mask } => {
            attrs.push(Attr::U32(attr::ADDR4, u32::from_ne_bytes(addr.octets())));
            attrs.push(Attr::U32(attr::MASK4, u32::from_ne_bytes(mask.octets())));
        }
        Matcher::Ipv6 { addr, prefix } => {
            check(attr::PREFIX6, (*prefix).into())?;
            attrs.push(Attr::Raw(attr::ADDR6, addr.octets().to_vec()));
            attrs.push(Attr::U8(attr::PREFIX6, *prefix));
        }
        Matcher::Weight { weight } => attrs.push(u16_attr(attr::WEIGHT, *weight)?),
        Matcher::Content { pattern } => {
            let len = pattern.len();
            if len == 0 || len > limits::MAX_PATTERN {
                return Err(Error::OutOfRange {
                    name: "pattern length",
                    value: len as u64,
                    min: 1,
                    max: limits::MAX_PATTERN as u64,
                });
            }
            if pattern.contains('\0') {
                return Err(Error::Invalid("a content string may not contain NUL"));
            }
            attrs.push(Attr::Raw(attr::PATTERN, pattern.as_bytes().to_vec()));
        }
    }
    Ok(attrs)
}

/// A message of the `openqos` family.
#[derive(Clone, Debug, PartialEq, Eq)]
struct OqMsg {
    cmd: u8,
    attrs: Vec<Attr>,
}

impl GenlFamily for OqMsg {
    fn family_name() -> &'static str {
        "openqos"
    }

    fn command(&self) -> u8 {
        self.cmd
    }

    fn version(&self) -> u8 {
        openqos_abi::abi::FAMILY_VERSION
    }
}

impl Emitable for OqMsg {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for OqMsg {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> std::result::Result<Self, DecodeError> {
        let mut attrs = Vec::new();
        for nla in NlasIterator::new(buf) {
            let nla = nla?;
            attrs.push(Attr::Raw(nla.kind(), nla.value().to_vec()));
        }
        Ok(OqMsg {
            cmd: header.cmd,
            attrs,
        })
    }
}

fn check(ty: u16, value: u64) -> Result<()> {
    let p = openqos_abi::abi::policy(ty).expect("attribute in the ABI");
    if value < p.min || value > p.max {
        return Err(Error::OutOfRange {
            name: p.name,
            value,
            min: p.min,
            max: p.max,
        });
    }
    Ok(())
}

fn u16_attr(ty: u16, v: u16) -> Result<Attr> {
    check(ty, v.into())?;
    Ok(Attr::U16(ty, v))
}

fn u32_attr(ty: u16, v: u32) -> Result<Attr> {
    check(ty, v.into())?;
    Ok(Attr::U32(ty, v))
}

fn u64_attr(ty: u16, v: u64) -> Result<Attr> {
    check(ty, v)?;
    Ok(Attr::U64(ty, v))
}

fn group_setting_attrs(s: &GroupSettings) -> Result<Vec<Attr>> {
    let mut attrs = Vec::new();
    if let Some(r) = s.rate {
        attrs.push(u64_attr(attr::RATE, r)?);
    }
    if let Some(b) = s.burst {
        attrs.push(u64_attr(attr::BURST, b)?);
    }
    if let Some(f) = s.ftp {
        attrs.push(Attr::U32(
            attr::GROUP_FLAGS,
            if f { group_flags::FTP } else { 0 },
        ));
    }
    if let Some(ms) = s.lease_ms {
        attrs.push(u32_attr(attr::LEASE_MS, ms)?);
    }
    Ok(attrs)
}

/// A connection to the `openqos` family.
pub struct Client {
    sock: Socket,
    family_id: u16,
    seq: u32,
}

const ENOENT: i32 = 2;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLMSGERR_ATTR_OFFS: u16 = 2;
const NLMSGERR_ATTR_MISS_TYPE: u16 = 5;

impl Client {
    /// Opens a netlink socket and resolves the family.
    pub fn connect() -> Result<Self> {
        let mut sock = Socket::new(NETLINK_GENERIC)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        sock.set_ext_ack(true)?;
        sock.set_cap_ack(true)?;
        let mut c = Client {
            sock,
            family_id: 0,
            seq: 0,
        };
        let (id, version) = c.resolve()?;
        check_abi(version)?;
        c.family_id = id;
        Ok(c)
    }

    /// The number the generic netlink controller gave the family (the `nlmsg_type` of
    /// its messages), for tools that frame messages themselves (the fuzzer).
    pub fn family_id(&self) -> u16 {
        self.family_id
    }

    /// The ABI version of the loaded module (`None`: not loaded), whatever it is: what
    /// `-V` reports beside the tools' own.
    pub fn module_abi() -> Result<Option<u8>> {
        let mut sock = Socket::new(NETLINK_GENERIC)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        let mut c = Client {
            sock,
            family_id: 0,
            seq: 0,
        };
        match c.resolve() {
            Ok((_, v)) => Ok(Some(v)),
            Err(Error::ModuleNotLoaded) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The family's id and version.
    fn resolve(&mut self) -> Result<(u16, u8)> {
        let mut msg = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName("openqos".into())],
        });
        msg.finalize();
        let mut nl = NetlinkMessage::from(msg);
        nl.header.flags = NLM_F_REQUEST;
        self.seq += 1;
        nl.header.sequence_number = self.seq;
        nl.finalize();
        let mut buf = vec![0; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        let mut rx = Vec::with_capacity(8192);
        self.sock.recv(&mut rx, 0)?;
        let reply = NetlinkMessage::<GenlMessage<GenlCtrl>>::deserialize(&rx)
            .map_err(|e| Error::Decode(e.to_string()))?;
        match reply.payload {
            NetlinkPayload::InnerMessage(m) => {
                let nlas = &m.payload.nlas;
                let id = nlas.iter().find_map(|a| match a {
                    GenlCtrlAttrs::FamilyId(id) => Some(*id),
                    _ => None,
                });
                let version = nlas.iter().find_map(|a| match a {
                    GenlCtrlAttrs::Version(v) => Some(*v),
                    _ => None,
                });
                match (id, version) {
                    (Some(id), Some(v)) => Ok((id, u8::try_from(v).unwrap_or(u8::MAX))),
                    _ => Err(Error::Decode("family without id or version".into())),
                }
            }
            NetlinkPayload::Error(e) if e.raw_code() == -ENOENT => Err(Error::ModuleNotLoaded),
            NetlinkPayload::Error(e) => Err(Error::Kernel {
                errno: -e.raw_code(),
                message: None,
                attr: None,
                offset: None,
            }),
            _ => Err(Error::Decode("unexpected reply to family lookup".into())),
        }
    }

    /// Sends `cmd` with `attrs` and collects the replies (several for a dump).
    fn request(&mut self, cmd: u8, attrs: Vec<Attr>, dump: bool) -> Result<Vec<OqMsg>> {
        let mut msg = GenlMessage::from_payload(OqMsg { cmd, attrs });
        msg.set_resolved_family_id(self.family_id);
        msg.finalize();
        let mut nl = NetlinkMessage::from(msg);
        nl.header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { NLM_F_ACK };
        self.seq += 1;
        nl.header.sequence_number = self.seq;
        nl.finalize();
        let mut buf = vec![0; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.sock.send(&buf, 0)?;

        let mut out = Vec::new();
        loop {
            let mut rx = Vec::with_capacity(64 * 1024);
            self.sock.recv(&mut rx, 0)?;
            let mut off = 0;
            while off < rx.len() {
                let m = NetlinkMessage::<GenlMessage<OqMsg>>::deserialize(&rx[off..])
                    .map_err(|e| Error::Decode(e.to_string()))?;
                let len = m.header.length as usize;
                if len == 0 {
                    return Err(Error::Decode("zero-length message".into()));
                }
                off += (len + 3) & !3;
                if m.header.sequence_number != self.seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(g) => out.push(g.payload),
                    NetlinkPayload::Done(d) => {
                        if d.code != 0 {
                            return Err(ext_error(-d.code, &d.extended_ack, &buf));
                        }
                        return Ok(out);
                    }
                    NetlinkPayload::Error(e) => {
                        let code = e.raw_code();
                        if code == 0 {
                            return Ok(out);
                        }
                        // With NETLINK_CAP_ACK the echoed request is just its 16-byte header.
                        let tlvs = e.header.get(16..).unwrap_or(&[]);
                        return Err(ext_error(-code, tlvs, &buf));
                    }
                    _ => {}
                }
            }
        }
    }

    /// Creates a rule: the module listens on `port` and sends connections to
    /// `default_port` unless a condition says otherwise.
    pub fn create_rule(
        &mut self,
        port: u16,
        kind: RuleType,
        default_port: u16,
        opts: &RuleOptions,
    ) -> Result<()> {
        let attrs = rule_attrs(port, kind, default_port, opts)?;
        self.request(cmd::RULE_NEW, attrs, false).map(drop)
    }

    /// Deletes the rule on `port`.
    pub fn delete_rule(&mut self, port: u16) -> Result<()> {
        self.request(cmd::RULE_DEL, vec![u16_attr(attr::PORT, port)?], false)
            .map(drop)
    }

    /// Appends a condition to the rule on `port`.
    pub fn add_condition(&mut self, port: u16, matcher: Matcher, out_port: u16) -> Result<()> {
        self.set_condition(port, None, matcher, out_port)
    }

    /// Appends a condition to the rule on `port` (`index` = `None`), or atomically
    /// replaces the condition at 1-based `index` (e.g. to change a weight at run time).
    pub fn set_condition(
        &mut self,
        port: u16,
        index: Option<u32>,
        matcher: Matcher,
        out_port: u16,
    ) -> Result<()> {
        self.set_condition_prio(port, index, matcher, out_port, None)
    }

    /// [`Client::set_condition`] with the priority class of the condition's connections
    /// at `out_port` (used if that port has a prioritized queue).
    pub fn set_condition_prio(
        &mut self,
        port: u16,
        index: Option<u32>,
        matcher: Matcher,
        out_port: u16,
        prio: Option<u8>,
    ) -> Result<()> {
        let mut attrs = vec![u16_attr(attr::PORT, port)?];
        if let Some(i) = index {
            check(attr::COND_INDEX, i.into())?;
            attrs.push(Attr::U32(attr::COND_INDEX, i));
        }
        attrs.extend(cond_attrs(&matcher, out_port, prio)?);
        let c = if index.is_some() {
            cmd::COND_SET
        } else {
            cmd::COND_NEW
        };
        self.request(c, attrs, false).map(drop)
    }

    /// Deletes the condition at 1-based `index` of the rule on `port`.
    pub fn delete_condition(&mut self, port: u16, index: u32) -> Result<()> {
        check(attr::COND_INDEX, index.into())?;
        let attrs = vec![
            u16_attr(attr::PORT, port)?,
            Attr::U32(attr::COND_INDEX, index),
        ];
        self.request(cmd::COND_DEL, attrs, false).map(drop)
    }

    /// Sends `cmd` with attributes given as raw `(type, value)` pairs, without checking
    /// them against the policy first. A type with `NLA_F_NESTED` (0x8000) set is sent as
    /// a nested attribute whose payload is the given bytes. For testing the kernel's own
    /// validation; tools use the typed calls.
    pub fn request_unchecked(&mut self, cmd: u8, attrs: &[(u16, Vec<u8>)]) -> Result<()> {
        const NLA_F_NESTED: u16 = 0x8000;
        let attrs = attrs
            .iter()
            .map(|(t, v)| match t & NLA_F_NESTED {
                0 => Attr::Raw(*t, v.clone()),
                _ => Attr::RawNested(t & !NLA_F_NESTED, v.clone()),
            })
            .collect();
        self.request(cmd, attrs, false).map(drop)
    }

    /// Replaces every rule of the caller's network namespace with `rules`, atomically:
    /// afterwards either all of them are in force or nothing changed. Rules on ports
    /// that stay keep their listeners (no connection is refused meanwhile) and their
    /// counters. With `check_only`, the kernel only validates the set.
    pub fn replace_rules(&mut self, rules: &[RuleConfig], check_only: bool) -> Result<()> {
        let mut attrs = Vec::with_capacity(rules.len() + 1);
        // The rule each attribute belongs to, to name it in an error.
        let mut owner = Vec::with_capacity(rules.len() + 1);
        for (i, r) in rules.iter().enumerate() {
            // A nested attribute holds at most 64 KiB: the conditions past the first
            // CONDS_PER_NEST follow in RULE_MORE attributes of the same port.
            let mut chunks = r.conditions.chunks(limits::CONDS_PER_NEST);
            let mut a = rule_attrs(r.port, r.kind, r.default_port, &r.opts)?;
            for (m, out, prio) in chunks.next().unwrap_or(&[]) {
                a.push(Attr::Nested(attr::COND, cond_attrs(m, *out, *prio)?));
            }
            attrs.push(Attr::Nested(attr::RULE, a));
            owner.push(i);
            for chunk in chunks {
                let mut more = vec![Attr::U16(attr::PORT, r.port)];
                for (m, out, prio) in chunk {
                    more.push(Attr::Nested(attr::COND, cond_attrs(m, *out, *prio)?));
                }
                attrs.push(Attr::Nested(attr::RULE_MORE, more));
                owner.push(i);
            }
        }
        if check_only {
            attrs.push(Attr::U32(attr::REPLACE_FLAGS, replace_flags::CHECK));
        }
        // The whole set travels in one message: make room for it in the socket's send
        // buffer (beyond `wmem_max` if we may).
        let len = attrs.as_slice().buffer_len() + 64;
        if len > 128 * 1024 {
            self.grow_sndbuf(len)?;
        }
        let ends: Vec<usize> = attrs
            .iter()
            .scan(0, |end, a| {
                *end += (a.buffer_len() + 3) & !3;
                Some(*end)
            })
            .collect();
        self.request(cmd::RULESET_REPLACE, attrs, false)
            .map(drop)
            .map_err(|e| match e {
                Error::Kernel {
                    offset: Some(o), ..
                } if o < ends.last().copied().unwrap_or(0) => {
                    match owner.get(ends.partition_point(|end| *end <= o)) {
                        Some(&index) => Error::InRule {
                            index,
                            source: Box::new(e),
                        },
                        None => e,
                    }
                }
                e => e,
            })
    }

    fn grow_sndbuf(&self, len: usize) -> Result<()> {
        use nix::sys::socket::{setsockopt, sockopt};
        use std::os::fd::{AsRawFd, BorrowedFd};
        // SAFETY: the descriptor belongs to `self.sock`, which outlives this call.
        let fd = unsafe { BorrowedFd::borrow_raw(self.sock.as_raw_fd()) };
        let want = len.saturating_mul(2);
        if setsockopt(&fd, sockopt::SndBufForce, &want).is_err() {
            setsockopt(&fd, sockopt::SndBuf, &want).map_err(std::io::Error::from)?;
        }
        Ok(())
    }

    /// Deletes every rule of the caller's network namespace.
    pub fn flush(&mut self) -> Result<()> {
        self.request(cmd::FLUSH, vec![], false).map(drop)
    }

    /// Meters a listening port no rule sends to (those are metered automatically).
    pub fn create_meter(&mut self, port: u16) -> Result<()> {
        self.request(cmd::METER_NEW, vec![u16_attr(attr::PORT, port)?], false)
            .map(drop)
    }

    /// Stops metering a port; its counters are gone.
    pub fn delete_meter(&mut self, port: u16) -> Result<()> {
        self.request(cmd::METER_DEL, vec![u16_attr(attr::PORT, port)?], false)
            .map(drop)
    }

    /// Creates socket group `id` of type `kind`; `settings.rate` is required for rate
    /// and output groups.
    pub fn create_group(
        &mut self,
        id: u32,
        kind: GroupType,
        settings: &GroupSettings,
    ) -> Result<()> {
        let mut attrs = vec![
            u32_attr(attr::GROUP_ID, id)?,
            Attr::U8(attr::GROUP_TYPE, kind.to_abi()),
        ];
        attrs.extend(group_setting_attrs(settings)?);
        self.request(cmd::GROUP_NEW, attrs, false).map(drop)
    }

    /// Deletes socket group `id`; whoever it held back resumes.
    pub fn delete_group(&mut self, id: u32) -> Result<()> {
        self.request(cmd::GROUP_DEL, vec![u32_attr(attr::GROUP_ID, id)?], false)
            .map(drop)
    }

    /// Changes the settings of group `id` live.
    pub fn set_group(&mut self, id: u32, settings: &GroupSettings) -> Result<()> {
        let mut attrs = vec![u32_attr(attr::GROUP_ID, id)?];
        attrs.extend(group_setting_attrs(settings)?);
        self.request(cmd::GROUP_SET, attrs, false).map(drop)
    }

    /// Changes the weight of `port` in accept-ratio group `id`.
    pub fn set_group_weight(&mut self, id: u32, port: u16, weight: u16) -> Result<()> {
        let attrs = vec![
            u32_attr(attr::GROUP_ID, id)?,
            u16_attr(attr::PORT, port)?,
            u16_attr(attr::WEIGHT, weight)?,
        ];
        self.request(cmd::GROUP_SET, attrs, false).map(drop)
    }

    /// Attaches listening port `port` to group `id` (with `weight` in an accept-ratio
    /// group; default 1); `ftp`: as an FTP control port, whose clients' passive data
    /// connections join the group.
    pub fn add_group_port(
        &mut self,
        id: u32,
        port: u16,
        weight: Option<u16>,
        ftp: bool,
    ) -> Result<()> {
        let mut attrs = vec![u32_attr(attr::GROUP_ID, id)?, u16_attr(attr::PORT, port)?];
        if let Some(w) = weight {
            attrs.push(u16_attr(attr::WEIGHT, w)?);
        }
        if ftp {
            attrs.push(u32_attr(attr::GROUP_FLAGS, group_flags::FTP)?);
        }
        self.request(cmd::GROUP_PORT_ADD, attrs, false).map(drop)
    }

    /// Detaches `port` from group `id`.
    pub fn delete_group_port(&mut self, id: u32, port: u16) -> Result<()> {
        let attrs = vec![u32_attr(attr::GROUP_ID, id)?, u16_attr(attr::PORT, port)?];
        self.request(cmd::GROUP_PORT_DEL, attrs, false).map(drop)
    }

    /// Lists the socket groups (one, if given), sorted by number.
    pub fn groups(&mut self, id: Option<u32>) -> Result<Vec<Group>> {
        let attrs = match id {
            Some(i) => vec![u32_attr(attr::GROUP_ID, i)?],
            None => vec![],
        };
        self.request(cmd::GROUP_GET, attrs, true)?
            .iter()
            .map(decode_group)
            .collect()
    }

    /// Reads the meters (of one port, if given), sorted by port.
    pub fn meters(&mut self, port: Option<u16>) -> Result<Vec<Meter>> {
        let attrs = match port {
            Some(p) => vec![u16_attr(attr::PORT, p)?],
            None => vec![],
        };
        self.request(cmd::METER_GET, attrs, true)?
            .iter()
            .map(decode_meter)
            .collect()
    }

    /// Gives `port` (a server's listening port) a prioritized accept queue, or changes
    /// the settings of its queue: connections that conditions send there with a class
    /// wait in the module and go to the server in priority order as it accepts.
    pub fn set_prio(&mut self, port: u16, s: &PrioSettings) -> Result<()> {
        let mut attrs = vec![u16_attr(attr::PORT, port)?];
        if let Some(c) = s.classes {
            check(attr::PRIO_CLASSES, c.into())?;
            attrs.push(Attr::U8(attr::PRIO_CLASSES, c));
        }
        if let Some(v) = s.cap {
            attrs.push(u32_attr(attr::PRIO_CAP, v)?);
        }
        if let Some(v) = s.depth {
            attrs.push(u32_attr(attr::PRIO_DEPTH, v)?);
        }
        if let Some(e) = s.early_refuse {
            let f = if e { prio_flags::EARLY_REFUSE } else { 0 };
            attrs.push(Attr::U32(attr::PRIO_FLAGS, f));
        }
        for &(class, dl) in &s.deadlines {
            check(attr::PRIO, class.into())?;
            let mut n = vec![Attr::U8(attr::PRIO, class)];
            if let Some(ms) = dl {
                if ms == 0 {
                    return Err(Error::Invalid("a deadline is at least 1 ms"));
                }
                n.push(u32_attr(attr::DEADLINE_MS, ms)?);
            }
            attrs.push(Attr::Nested(attr::PRIO_CLASS, n));
        }
        self.request(cmd::PRIO_SET, attrs, false).map(drop)
    }

    /// Removes the prioritized queue of `port`: what it holds goes to the server as far
    /// as it has room, the rest is reset.
    pub fn delete_prio(&mut self, port: u16) -> Result<()> {
        self.request(cmd::PRIO_DEL, vec![u16_attr(attr::PORT, port)?], false)
            .map(drop)
    }

    /// Lists the prioritized ports (one, if given) with their classes' counters.
    pub fn prios(&mut self, port: Option<u16>) -> Result<Vec<PrioPort>> {
        let attrs = match port {
            Some(p) => vec![u16_attr(attr::PORT, p)?],
            None => vec![],
        };
        self.request(cmd::PRIO_GET, attrs, true)?
            .iter()
            .map(decode_prio)
            .collect()
    }

    /// Lists the rules (of one port, if given) with their counters.
    pub fn rules(&mut self, port: Option<u16>) -> Result<Vec<Rule>> {
        let attrs = match port {
            Some(p) => vec![u16_attr(attr::PORT, p)?],
            None => vec![],
        };
        let msgs = self.request(cmd::RULE_GET, attrs, true)?;
        let mut rules: Vec<Rule> = Vec::new();
        for m in msgs {
            let part = decode_rule(&m)?;
            // A rule with many conditions arrives in several consecutive messages; ports
            // are unique, so a repeated port is a continuation.
            match rules.last_mut() {
                Some(r) if r.port == part.port => r.conditions.extend(part.conditions),
                _ => rules.push(part),
            }
        }
        Ok(rules)
    }
}

impl Rule {
    /// The configuration of this rule (what [`Client::replace_rules`] takes).
    pub fn config(&self) -> RuleConfig {
        RuleConfig {
            port: self.port,
            kind: self.kind,
            default_port: self.default_port,
            opts: RuleOptions {
                dual_stack: self.dual_stack,
                nocase: self.nocase,
                data_timeout_ms: self.data_timeout_ms,
                default_prio: self.default_prio,
            },
            conditions: self
                .conditions
                .iter()
                .map(|c| (c.matcher.clone(), c.out_port, c.prio))
                .collect(),
        }
    }
}

/// Checks that a module of ABI version `module` speaks the tools' version.
fn check_abi(module: u8) -> Result<()> {
    let tools = openqos_abi::abi::FAMILY_VERSION;
    if module != tools {
        return Err(Error::AbiMismatch { module, tools });
    }
    Ok(())
}

/// The `-V` line of a tool: its version and ABI, and the loaded module's ABI.
pub fn version_line(tool: &str, version: &str) -> String {
    let tools = openqos_abi::abi::FAMILY_VERSION;
    let module = match Client::module_abi() {
        Ok(Some(v)) if v == tools => format!("module: ABI {v}, loaded"),
        Ok(Some(v)) => format!(
            "module: ABI {v}, loaded: MISMATCH, {}",
            Error::AbiMismatch { module: v, tools }
        ),
        Ok(None) => "module: not loaded".to_owned(),
        Err(e) => format!("module: unknown ({e})"),
    };
    format!("{tool} {version} (openqos ABI {tools}); {module}")
}

/// Handles a tool's `-V`/`--version` given alone: prints [`version_line`] (the tool's
/// version and ABI, and the loaded module's) and exits. Call it before parsing the
/// arguments; anything else is left to the parser.
pub fn version_flag(tool: &str, version: &str) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [a] = &args[..] {
        if a == "-V" || a == "--version" {
            println!("{}", version_line(tool, version));
            std::process::exit(0);
        }
    }
}

/// Handles a tool's `--completions SHELL` given alone (`bash`, `zsh` or `fish`): prints
/// the completion script that clap generates from the tool's own argument definitions
/// `C` (the ones `--help` shows) and exits; what `make install` installs. Call it before
/// parsing the arguments.
pub fn completions_flag<C: clap::CommandFactory>(name: &str) {
    use clap_complete::Shell;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [a, sh] = &args[..] else { return };
    if a != "--completions" {
        return;
    }
    let shell = match sh.as_str() {
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        "fish" => Shell::Fish,
        _ => {
            eprintln!("{name}: --completions takes bash, zsh or fish, not '{sh}'");
            std::process::exit(2);
        }
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut C::command(), name, &mut script);
    let ok = std::io::Write::write_all(&mut std::io::stdout().lock(), &script).is_ok();
    std::process::exit(if ok { 0 } else { 1 });
}

/// Reads `text` (the Prometheus text format) with the reference parser, Python's
/// prometheus_client (Debian's python3-prometheus-client, which scripts/setup installs),
/// and runs `checks` on `fams`, a dict of its metric families by name: the tools' tests
/// of their exporters. Returns the number of families it read, or why it failed.
pub fn prometheus_reference_check(text: &str, checks: &str) -> std::result::Result<usize, String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let script = format!(
        "import sys\nfrom prometheus_client.parser import text_string_to_metric_families\n\
         fams = {{f.name: f for f in text_string_to_metric_families(sys.stdin.read())}}\n\
         {checks}\nprint(len(fams))\n"
    );
    let py = "/usr/bin/python3";
    let mut child = Command::new(py)
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{py}: {e} (run scripts/setup)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "prometheus_client refused the text (scripts/setup installs \
             python3-prometheus-client): {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("parser output: {e}"))
}

/// Decodes an extended ack. `request` is the message that was sent: the kernel points at
/// an offending attribute by its offset in it (`NLMSGERR_ATTR_OFFS`).
fn ext_error(errno: i32, tlvs: &[u8], request: &[u8]) -> Error {
    let mut message = None;
    let mut attr = None;
    let mut offset = None;
    for nla in NlasIterator::new(tlvs).flatten() {
        match nla.kind() {
            NLMSGERR_ATTR_MSG => {
                let v = nla.value();
                let v = v.split(|b| *b == 0).next().unwrap_or(v);
                message = Some(String::from_utf8_lossy(v).into_owned());
            }
            NLMSGERR_ATTR_MISS_TYPE => {
                if let Some(b) = nla.value().get(..2) {
                    let ty = u16::from_ne_bytes([b[0], b[1]]);
                    attr = openqos_abi::abi::policy(ty).map(|p| p.name);
                    if message.is_none() {
                        message = Some("missing required attribute".into());
                    }
                }
            }
            NLMSGERR_ATTR_OFFS => {
                let off = nla
                    .value()
                    .get(..4)
                    .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize);
                offset = off;
                let ty = off
                    .and_then(|o| request.get(o + 2..o + 4))
                    .map(|b| u16::from_ne_bytes([b[0], b[1]]) & 0x3fff);
                if attr.is_none() {
                    attr = ty.and_then(openqos_abi::abi::policy).map(|p| p.name);
                }
            }
            _ => {}
        }
    }
    Error::Kernel {
        errno,
        message,
        attr,
        offset: offset.and_then(|o| o.checked_sub(REQUEST_HDRLEN)),
    }
}

/// Size of the netlink and generic netlink headers of a request.
const REQUEST_HDRLEN: usize = 16 + 4;

fn get(attrs: &[Attr], ty: u16) -> Option<&[u8]> {
    attrs.iter().find_map(|a| match a {
        Attr::Raw(k, v) if k & 0x3fff == ty => Some(v.as_slice()),
        _ => None,
    })
}

fn int<const N: usize>(attrs: &[Attr], ty: u16) -> Result<[u8; N]> {
    get(attrs, ty)
        .and_then(|v| v.get(..N))
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| Error::Decode(format!("attribute {ty} missing or short")))
}

fn nested(v: &[u8]) -> Result<Vec<Attr>> {
    NlasIterator::new(v)
        .map(|n| {
            let n: NlaBuffer<&[u8]> = n.map_err(|e| Error::Decode(e.to_string()))?;
            Ok(Attr::Raw(n.kind(), n.value().to_vec()))
        })
        .collect()
}

fn decode_meter(m: &OqMsg) -> Result<Meter> {
    let a = &m.attrs;
    let flags = u32::from_ne_bytes(int(a, attr::METER_FLAGS)?);
    let s = nested(get(a, attr::METER_STATS).ok_or(Error::Decode("meter without stats".into()))?)?;
    let c = |t| int::<8>(&s, t).map(u64::from_ne_bytes);
    let hist = decode_hist(get(a, attr::DELAY_HIST))?;
    Ok(Meter {
        port: u16::from_ne_bytes(int(a, attr::PORT)?),
        auto: flags & meter_flags::AUTO != 0,
        requested: flags & meter_flags::REQUESTED != 0,
        grouped: flags & meter_flags::GROUPED != 0,
        prio: flags & meter_flags::PRIO != 0,
        waiting: c(meter_stat::WAITING)?,
        oldest_ns: c(meter_stat::OLDEST_NS)?,
        accepted: c(meter_stat::ACCEPTED)?,
        delay_ns: c(meter_stat::DELAY_NS)?,
        rx_bytes: c(meter_stat::RX_BYTES)?,
        tx_bytes: c(meter_stat::TX_BYTES)?,
        open: c(meter_stat::OPEN)?,
        listeners: c(meter_stat::LISTENERS)?,
        hist,
    })
}

fn decode_group(m: &OqMsg) -> Result<Group> {
    let a = &m.attrs;
    let flags = u32::from_ne_bytes(int(a, attr::GROUP_FLAGS)?);
    let s = nested(get(a, attr::GROUP_STATS).ok_or(Error::Decode("group without stats".into()))?)?;
    let c = |t| int::<8>(&s, t).map(u64::from_ne_bytes);
    let mut members = Vec::new();
    for x in a
        .iter()
        .filter(|x| matches!(x, Attr::Raw(k, _) if k & 0x3fff == attr::MEMBER))
    {
        let Attr::Raw(_, v) = x else { continue };
        let n = nested(v)?;
        members.push(GroupMember {
            port: u16::from_ne_bytes(int(&n, attr::PORT)?),
            weight: u16::from_ne_bytes(int(&n, attr::WEIGHT)?),
            admitted: u64::from_ne_bytes(int(&n, attr::HITS)?),
            // Modules before member flags send none.
            ftp: int(&n, attr::GROUP_FLAGS)
                .is_ok_and(|f| u32::from_ne_bytes(f) & group_flags::FTP != 0),
        });
    }
    Ok(Group {
        id: u32::from_ne_bytes(int(a, attr::GROUP_ID)?),
        kind: GroupType::from_abi(int::<1>(a, attr::GROUP_TYPE)?[0])?,
        rate: int::<8>(a, attr::RATE).ok().map(u64::from_ne_bytes),
        burst: int::<8>(a, attr::BURST).ok().map(u64::from_ne_bytes),
        ftp: flags & group_flags::FTP != 0,
        members,
        admitted: c(group_stat::ADMITTED)?,
        held: c(group_stat::HELD)?,
        sleeping: c(group_stat::SLEEPING)?,
        tokens: c(group_stat::TOKENS)?,
        ftp_joined: c(group_stat::FTP_JOINED)?,
        timer_runs: c(group_stat::TIMER_RUNS)?,
        lease_ms: int::<4>(a, attr::LEASE_MS).ok().map(u32::from_ne_bytes),
        fallback_rate: int::<8>(a, attr::FALLBACK_RATE)
            .ok()
            .map(u64::from_ne_bytes),
        // Modules before leases send no such counter.
        lease_expired: c(group_stat::LEASE_EXPIRED).unwrap_or(0),
    })
}

fn decode_hist(v: Option<&[u8]>) -> Result<Vec<u64>> {
    let hist = v
        .ok_or(Error::Decode("no histogram".into()))?
        .chunks_exact(8)
        .map(|b| u64::from_ne_bytes(b.try_into().unwrap_or_default()))
        .collect::<Vec<_>>();
    if hist.len() != openqos_abi::abi::hist::BUCKETS {
        return Err(Error::Decode(format!(
            "histogram of {} buckets",
            hist.len()
        )));
    }
    Ok(hist)
}

fn decode_prio(m: &OqMsg) -> Result<PrioPort> {
    let a = &m.attrs;
    let flags = u32::from_ne_bytes(int(a, attr::PRIO_FLAGS)?);
    let mut classes = Vec::new();
    for x in a
        .iter()
        .filter(|x| matches!(x, Attr::Raw(k, _) if k & 0x3fff == attr::PRIO_CLASS))
    {
        let Attr::Raw(_, v) = x else { continue };
        let n = nested(v)?;
        let s =
            nested(get(&n, attr::PRIO_STATS).ok_or(Error::Decode("class without stats".into()))?)?;
        let c = |t| int::<8>(&s, t).map(u64::from_ne_bytes);
        classes.push(PrioClass {
            class: int::<1>(&n, attr::PRIO)?[0],
            deadline_ms: int::<4>(&n, attr::DEADLINE_MS).ok().map(u32::from_ne_bytes),
            waiting: c(prio_stat::WAITING)?,
            admitted: c(prio_stat::ADMITTED)?,
            released: c(prio_stat::RELEASED)?,
            pushed_out: c(prio_stat::PUSHED_OUT)?,
            expired: c(prio_stat::EXPIRED)?,
            refused: c(prio_stat::REFUSED)?,
            delay_ns: c(prio_stat::DELAY_NS)?,
            lost: c(prio_stat::LOST)?,
            hist: decode_hist(get(&n, attr::DELAY_HIST))?,
        });
    }
    Ok(PrioPort {
        port: u16::from_ne_bytes(int(a, attr::PORT)?),
        cap: u32::from_ne_bytes(int(a, attr::PRIO_CAP)?),
        depth: u32::from_ne_bytes(int(a, attr::PRIO_DEPTH)?),
        early_refuse: flags & prio_flags::EARLY_REFUSE != 0,
        classes,
    })
}

fn decode_rule(m: &OqMsg) -> Result<Rule> {
    let a = &m.attrs;
    let port = u16::from_ne_bytes(int(a, attr::PORT)?);
    let kind = RuleType::from_abi(int::<1>(a, attr::RULE_TYPE)?[0])?;
    let default_port = u16::from_ne_bytes(int(a, attr::DEFAULT_PORT)?);
    let flags = u32::from_ne_bytes(int(a, attr::RULE_FLAGS)?);
    let mut stats = RuleStats::default();
    if let Some(s) = get(a, attr::STATS) {
        let s = nested(s)?;
        let c = |t| int::<8>(&s, t).map(u64::from_ne_bytes).unwrap_or(0);
        stats = RuleStats {
            default_hits: c(stat::DEFAULT_HITS),
            forwarded: c(stat::FORWARDED),
            no_listener: c(stat::NO_LISTENER),
            queue_full: c(stat::QUEUE_FULL),
            family_mismatch: c(stat::FAMILY_MISMATCH),
            other_refused: c(stat::OTHER_REFUSED),
            waiting: c(stat::WAITING),
            timed_out: c(stat::TIMED_OUT),
            pending_full: c(stat::PENDING_FULL),
            scanned: c(stat::SCANNED),
            looks: c(stat::LOOKS),
        };
    }
    let mut conditions = Vec::new();
    for c in a
        .iter()
        .filter(|x| matches!(x, Attr::Raw(k, _) if k & 0x3fff == attr::COND))
    {
        let Attr::Raw(_, v) = c else { continue };
        let n = nested(v)?;
        let matcher = if let Some(p) = get(&n, attr::PATTERN) {
            Matcher::Content {
                pattern: String::from_utf8_lossy(p).into_owned(),
            }
        } else if let Ok(w) = int::<2>(&n, attr::WEIGHT) {
            Matcher::Weight {
                weight: u16::from_ne_bytes(w),
            }
        } else if get(&n, attr::ADDR4).is_some() {
            Matcher::Ipv4 {
                addr: Ipv4Addr::from(int::<4>(&n, attr::ADDR4)?),
                mask: Ipv4Addr::from(int::<4>(&n, attr::MASK4)?),
            }
        } else {
            Matcher::Ipv6 {
                addr: Ipv6Addr::from(int::<16>(&n, attr::ADDR6)?),
                prefix: int::<1>(&n, attr::PREFIX6)?[0],
            }
        };
        conditions.push(Condition {
            index: u32::from_ne_bytes(int(&n, attr::COND_INDEX)?),
            matcher,
            out_port: u16::from_ne_bytes(int(&n, attr::OUT_PORT)?),
            prio: int::<1>(&n, attr::PRIO).ok().map(|b| b[0]),
            hits: u64::from_ne_bytes(int(&n, attr::HITS)?),
        });
    }
    Ok(Rule {
        port,
        kind,
        default_port,
        default_prio: int::<1>(a, attr::DEFAULT_PRIO).ok().map(|b| b[0]),
        dual_stack: flags & rule_flags::DUAL_STACK != 0,
        nocase: flags & rule_flags::NOCASE != 0,
        data_timeout_ms: int::<4>(a, attr::DATA_TIMEOUT_MS)
            .ok()
            .map(u32::from_ne_bytes),
        automaton_states: int::<4>(a, attr::STATES).ok().map(u32::from_ne_bytes),
        conditions,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let m = OqMsg {
            cmd: cmd::COND_NEW,
            attrs: vec![
                Attr::U16(attr::PORT, 21),
                Attr::U32(attr::ADDR4, u32::from_ne_bytes([128, 143, 0, 0])),
            ],
        };
        let mut buf = vec![0; m.buffer_len()];
        m.emit(&mut buf);
        let back = OqMsg::parse_with_param(
            &buf,
            GenlHeader {
                cmd: cmd::COND_NEW,
                version: 1,
            },
        )
        .unwrap();
        assert_eq!(get(&back.attrs, attr::PORT), Some(&21u16.to_ne_bytes()[..]));
        assert_eq!(get(&back.attrs, attr::ADDR4), Some(&[128, 143, 0, 0][..]));
    }

    #[test]
    fn abi_versions_must_match() {
        let v = openqos_abi::abi::FAMILY_VERSION;
        assert!(check_abi(v).is_ok());
        let e = check_abi(v - 1).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&format!("speaks ABI version {}", v - 1))
                && text.contains(&format!("these tools speak version {v}")),
            "{text}"
        );
    }

    #[test]
    fn policy_ranges_are_enforced() {
        assert!(u16_attr(attr::PORT, 0).is_err());
        assert!(u16_attr(attr::PORT, 80).is_ok());
        assert!(check(attr::PREFIX6, 129).is_err());
        assert!(check(attr::COND_INDEX, 0).is_err());
    }

    #[test]
    fn extack_is_decoded() {
        let msg = b"no rule on this incoming port\0\0\0";
        let mut tlv = vec![];
        tlv.extend_from_slice(&((4 + 30) as u16).to_ne_bytes());
        tlv.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        tlv.extend_from_slice(&msg[..32]);
        let e = ext_error(2, &tlv, &[]);
        assert_eq!(e.errno(), Some(2));
        assert!(
            e.to_string()
                .starts_with("no rule on this incoming port: No such file"),
            "{e}"
        );
    }

    #[test]
    fn matcher_display() {
        let m = Matcher::Ipv4 {
            addr: "128.143.0.0".parse().unwrap(),
            mask: "255.255.0.0".parse().unwrap(),
        };
        assert_eq!(m.to_string(), "128.143.0.0/16");
        let m = Matcher::Ipv4 {
            addr: "10.0.0.0".parse().unwrap(),
            mask: "255.0.255.0".parse().unwrap(),
        };
        assert_eq!(m.to_string(), "10.0.0.0/255.0.255.0");
    }
}
