// SPDX-License-Identifier: GPL-2.0

//! The `openqos` generic netlink family: commands, attributes, their policy and limits.
//!
//! This file is the single definition of the ABI. The kernel module builds its
//! `nla_policy` tables from [`POLICY`] and the userspace client library encodes and
//! validates requests against the same table, so the two sides cannot drift.
//! `Documentation/netlink/openqos.yaml` describes the same family for humans.

/// Generic netlink family name (NUL-terminated for the kernel's `genl_family.name`).
pub const FAMILY_NAME: &[u8] = b"openqos\0";
/// Generic netlink family version: the version of this ABI. The module registers the
/// family with it, and the tools refuse to talk to a module of another version (the
/// generic netlink controller reports it with the family), saying which versions met
/// and what to do, instead of failing on the first attribute one of them does not know.
///
/// History: 1, the first release; 2, prioritized accept queues (`PRIO_SET`, `PRIO_DEL`,
/// `PRIO_GET`, attributes `PRIO` to `PRIO_STATS`, meter flag `PRIO`); 3, meter statistic
/// `OLDEST_NS`.
pub const FAMILY_VERSION: u8 = 3;

/// Commands of the family.
///
/// Mutating commands (`*_NEW`, `*_DEL`, `*_SET`, `FLUSH`, `RULESET_REPLACE`) require
/// `CAP_NET_ADMIN` in the network namespace's user namespace; `RULE_GET`, `METER_GET` and
/// `GROUP_GET` are open to everyone but only ever show the caller's own network namespace.
pub mod cmd {
    /// Create a rule: `PORT`, `RULE_TYPE`, `DEFAULT_PORT`, optional `RULE_FLAGS`.
    pub const RULE_NEW: u8 = 1;
    /// Delete a rule and every condition in it: `PORT`.
    pub const RULE_DEL: u8 = 2;
    /// Get one rule (`PORT`) or dump all rules of the namespace (no attribute).
    pub const RULE_GET: u8 = 3;
    /// Append a condition to a rule: `PORT`, `OUT_PORT` and a matcher.
    pub const COND_NEW: u8 = 4;
    /// Delete the condition at 1-based position `COND_INDEX` of rule `PORT`.
    pub const COND_DEL: u8 = 5;
    /// Delete every rule of the namespace (meters stay).
    pub const FLUSH: u8 = 6;
    /// Replace the condition at `COND_INDEX` of rule `PORT` atomically (e.g. change a
    /// weight at run time): `PORT`, `COND_INDEX`, `OUT_PORT` and a matcher.
    pub const COND_SET: u8 = 7;
    /// Replace every rule of the namespace with the set given as repeated `RULE`
    /// attributes, atomically: either the whole set is in force afterwards or nothing
    /// changed. Rules whose port stays keep their listeners (no connection is lost) and
    /// their counters. No `RULE` at all empties the namespace. With
    /// `replace_flags::CHECK` in `REPLACE_FLAGS` the set is only validated.
    pub const RULESET_REPLACE: u8 = 8;
    /// Meter a listening port that no rule sends to (ports rules send to are metered
    /// from the rule's creation on): `PORT`.
    pub const METER_NEW: u8 = 9;
    /// Stop metering a port and forget its counters: `PORT`.
    pub const METER_DEL: u8 = 10;
    /// Get one meter (`PORT`) or dump every meter of the namespace (no attribute).
    pub const METER_GET: u8 = 11;
    /// Create a socket group: `GROUP_ID`, `GROUP_TYPE`; `RATE` (and optionally `BURST`)
    /// for accept-rate and output groups; optional `GROUP_FLAGS`.
    pub const GROUP_NEW: u8 = 12;
    /// Delete a socket group (its ports leave it, held-back callers resume): `GROUP_ID`.
    pub const GROUP_DEL: u8 = 13;
    /// Get one group (`GROUP_ID`) or dump every group of the namespace (no attribute).
    pub const GROUP_GET: u8 = 14;
    /// Change a group live: `GROUP_ID` and any of `RATE`, `BURST`, `GROUP_FLAGS`; or
    /// `PORT` with `WEIGHT` to change a member's weight in an accept-ratio group. With
    /// `LEASE_MS` (accept-rate and output groups), the rate and burst given hold only
    /// until the lease runs out unless a later leased change renews it; then the group
    /// goes back by itself to the setting it had before the first leased change (its
    /// fallback). A change of `RATE` or `BURST` without a lease is the new setting and
    /// ends a lease.
    pub const GROUP_SET: u8 = 15;
    /// Attach a listening port to a group (the port gets a meter if it had none):
    /// `GROUP_ID`, `PORT`, optional `WEIGHT` (accept-ratio groups, default 1), optional
    /// `GROUP_FLAGS` for this member (`FTP`: the port is an FTP control port).
    pub const GROUP_PORT_ADD: u8 = 16;
    /// Detach a port from a group: `GROUP_ID`, `PORT`.
    pub const GROUP_PORT_DEL: u8 = 17;
    /// Give port `PORT` a prioritized accept queue, or change its settings: optional
    /// `PRIO_CLASSES` (at creation only), `PRIO_CAP`, `PRIO_DEPTH`, `PRIO_FLAGS`, and
    /// `PRIO_CLASS` nests (`PRIO` with its `DEADLINE_MS`). Connections that conditions
    /// (or a rule's default) send to the port with a class (`PRIO`, `DEFAULT_PRIO`) then
    /// wait in the module and are released into the server's accept queue in priority
    /// order as it accepts. The port gets a meter if it had none.
    pub const PRIO_SET: u8 = 18;
    /// Remove a port's prioritized queue: `PORT`. The connections it holds go to the
    /// server's accept queue as far as it has room, the rest are reset.
    pub const PRIO_DEL: u8 = 19;
    /// Get one prioritized port (`PORT`) or dump every one of the namespace.
    pub const PRIO_GET: u8 = 20;
    /// Highest command number.
    pub const MAX: u8 = 20;
    /// Name of each command (as in `Documentation/netlink/openqos.yaml`), by number.
    pub const NAMES: [(u8, &str); MAX as usize] = [
        (RULE_NEW, "rule-new"),
        (RULE_DEL, "rule-del"),
        (RULE_GET, "rule-get"),
        (COND_NEW, "cond-new"),
        (COND_DEL, "cond-del"),
        (FLUSH, "flush"),
        (COND_SET, "cond-set"),
        (RULESET_REPLACE, "ruleset-replace"),
        (METER_NEW, "meter-new"),
        (METER_DEL, "meter-del"),
        (METER_GET, "meter-get"),
        (GROUP_NEW, "group-new"),
        (GROUP_DEL, "group-del"),
        (GROUP_GET, "group-get"),
        (GROUP_SET, "group-set"),
        (GROUP_PORT_ADD, "group-port-add"),
        (GROUP_PORT_DEL, "group-port-del"),
        (PRIO_SET, "prio-set"),
        (PRIO_DEL, "prio-del"),
        (PRIO_GET, "prio-get"),
    ];
}

/// Rule types, the paper's `-A a|c|d`.
pub mod rule_type {
    /// Address-based: source subnet conditions.
    pub const ADDRESS: u8 = 1;
    /// Content-based: strings in the first data of the connection.
    pub const CONTENT: u8 = 2;
    /// Probabilistic: weighted outgoing ports.
    pub const PROBABILISTIC: u8 = 3;
    /// Highest rule type.
    pub const MAX: u8 = PROBABILISTIC;
}

/// Bits of `RULE_FLAGS`.
pub mod rule_flags {
    /// Listen on one dual-stack `[::]` socket: IPv4 clients arrive as v4-mapped IPv6
    /// connections and can only be forwarded to dual-stack `[::]` listeners. Without it
    /// the module listens on `0.0.0.0` (IPv4 clients, forwarded to IPv4 listeners) and on
    /// `[::]` with `IPV6_V6ONLY` (IPv6 clients, forwarded to IPv6 listeners).
    pub const DUAL_STACK: u32 = 1 << 0;
    /// Content rules: compare ASCII letters case-insensitively (Host headers).
    pub const NOCASE: u32 = 1 << 1;
    /// Every flag this module version knows.
    pub const ALL: u32 = DUAL_STACK | NOCASE;
}

/// Bits of `REPLACE_FLAGS`.
pub mod replace_flags {
    /// Validate the rule set (everything but binding the new incoming ports), change
    /// nothing.
    pub const CHECK: u32 = 1 << 0;
    /// Every flag this module version knows.
    pub const ALL: u32 = CHECK;
}

/// Attribute types (top level; `COND` and `STATS` nest some of them).
pub mod attr {
    /// Incoming port of the rule (`-p`), u16.
    pub const PORT: u16 = 1;
    /// Rule type (`-A a|c|d`), u8, one of [`super::rule_type`].
    pub const RULE_TYPE: u16 = 2;
    /// Default outgoing port (`-o`), u16.
    pub const DEFAULT_PORT: u16 = 3;
    /// Rule flags, u32, bits of [`super::rule_flags`].
    pub const RULE_FLAGS: u16 = 4;
    /// 1-based position of a condition in its rule, u32.
    pub const COND_INDEX: u16 = 5;
    /// IPv4 address of an address condition (`-i`), u32 in network byte order.
    pub const ADDR4: u16 = 6;
    /// IPv4 mask of an address condition (`-m`), u32 in network byte order.
    pub const MASK4: u16 = 7;
    /// IPv6 prefix of an address condition, 16 bytes.
    pub const ADDR6: u16 = 8;
    /// IPv6 prefix length, u8 in 0..=128.
    pub const PREFIX6: u16 = 9;
    /// Outgoing port of a condition (`-r`), u16.
    pub const OUT_PORT: u16 = 10;
    /// A condition (nested): in `RULE_GET` replies its index, matcher, out port and hits;
    /// inside a `RULE` of `RULESET_REPLACE` its matcher and out port.
    pub const COND: u16 = 11;
    /// Connections that matched a condition, u64.
    pub const HITS: u16 = 12;
    /// Rule statistics in a `RULE_GET` reply (nested, [`super::stat`] attributes).
    pub const STATS: u16 = 13;
    /// Padding attribute for 64-bit values.
    pub const PAD: u16 = 14;
    /// Weight of a probabilistic condition (`-c`), u16 in units of 1/10000.
    pub const WEIGHT: u16 = 15;
    /// String of a content condition (`-s`), 1 to
    /// [`super::limits::MAX_PATTERN`] bytes, no NUL.
    pub const PATTERN: u16 = 16;
    /// Content rules, in `RULE_GET` replies: states of the rule's automaton, u32.
    pub const STATES: u16 = 17;
    /// Content rules: milliseconds to wait for a client's first data before sending it to
    /// the default port, u32.
    pub const DATA_TIMEOUT_MS: u16 = 18;
    /// A rule of `RULESET_REPLACE` (nested): `PORT`, `RULE_TYPE`, `DEFAULT_PORT`, optional
    /// `RULE_FLAGS` and `DATA_TIMEOUT_MS`, then its conditions as repeated `COND`s in
    /// priority order.
    pub const RULE: u16 = 19;
    /// Flags of `RULESET_REPLACE`, u32, bits of [`super::replace_flags`].
    pub const REPLACE_FLAGS: u16 = 20;
    /// Sensor readings of a port in a `METER_GET` reply (nested, [`super::meter_stat`]
    /// attributes).
    pub const METER_STATS: u16 = 21;
    /// Histogram of the connection delays of a port in a `METER_GET` reply: one
    /// native-endian u64 count per bucket of [`super::hist`].
    pub const DELAY_HIST: u16 = 22;
    /// Why a port is metered, in a `METER_GET` reply: u32, bits of
    /// [`super::meter_flags`].
    pub const METER_FLAGS: u16 = 23;
    /// Socket group number, u32 in `1..=MAX_GROUP_ID`.
    pub const GROUP_ID: u16 = 24;
    /// Socket group type, u8, one of [`super::group_type`].
    pub const GROUP_TYPE: u16 = 25;
    /// Accept-rate groups: connections per second; output groups: bytes per second. u64.
    pub const RATE: u16 = 26;
    /// Most tokens the group's bucket holds (connections, or bytes), u64. Default: a
    /// tenth of a second's worth (at least 1 connection, or 4 KiB).
    pub const BURST: u16 = 27;
    /// Group flags, u32, bits of [`super::group_flags`].
    pub const GROUP_FLAGS: u16 = 28;
    /// A member port of a group in a `GROUP_GET` reply (nested: `PORT`, `WEIGHT`, `HITS`
    /// = connections accepted or bytes sent through the group from this port,
    /// `GROUP_FLAGS` = the member's own flags).
    pub const MEMBER: u16 = 29;
    /// Group statistics in a `GROUP_GET` reply (nested, [`super::group_stat`]).
    pub const GROUP_STATS: u16 = 30;
    /// `GROUP_SET`: the rate and burst given hold for this many milliseconds, u32 in
    /// `MIN_LEASE_MS..=MAX_LEASE_MS`. In a `GROUP_GET` reply: what is left of the lease.
    pub const LEASE_MS: u16 = 31;
    /// The rate a leased group goes back to when its lease runs out (`GROUP_GET`
    /// replies of leased groups), u64.
    pub const FALLBACK_RATE: u16 = 32;
    /// More conditions of the rule in the `RULE` just before it in a `RULESET_REPLACE`
    /// (nested): that rule's `PORT`, then `COND`s, appended in order. A nested
    /// attribute holds at most 64 KiB, about 1,600 conditions, so a rule with more
    /// travels as a `RULE` and one or more `RULE_MORE`s.
    pub const RULE_MORE: u16 = 33;
    /// Priority class of a condition's connections at its outgoing port, u8 in
    /// `0..MAX_PRIO_CLASSES` (0 highest). Only meaningful if that port has a prioritized
    /// queue (`PRIO_SET`); otherwise the connections go straight to the server, as
    /// without it. In a `PRIO_CLASS` nest: the class the nest is about.
    pub const PRIO: u16 = 34;
    /// Priority class of the connections a rule sends to its default port, u8.
    pub const DEFAULT_PRIO: u16 = 35;
    /// Classes of a prioritized port, u8 in `1..=MAX_PRIO_CLASSES` (default 3). A class
    /// at or past it counts as the lowest.
    pub const PRIO_CLASSES: u16 = 36;
    /// Most connections a prioritized port holds, all classes together, u32 in
    /// `1..=MAX_PRIO_HELD` (default `PRIO_CAP`). Past it an arrival pushes out the newest
    /// connection of the lowest class below its own, or is refused.
    pub const PRIO_CAP: u16 = 37;
    /// Most connections released into the server's accept queue and not yet accepted,
    /// u32 in `1..=MAX_PRIO_DEPTH` (default `PRIO_DEPTH`).
    pub const PRIO_DEPTH: u16 = 38;
    /// Relative deadline of a class, milliseconds since the connection's handshake, u32
    /// in `0..=MAX_DEADLINE_MS` (0: none). A held connection past it is reset.
    pub const DEADLINE_MS: u16 = 39;
    /// Flags of a prioritized port, u32, bits of [`super::prio_flags`].
    pub const PRIO_FLAGS: u16 = 40;
    /// One class of a prioritized port (nested): `PRIO` and `DEADLINE_MS`; in
    /// `PRIO_GET` replies also `PRIO_STATS` and `DELAY_HIST`.
    pub const PRIO_CLASS: u16 = 41;
    /// Statistics of a class in a `PRIO_GET` reply (nested, [`super::prio_stat`]).
    pub const PRIO_STATS: u16 = 42;
    /// Highest attribute number.
    pub const MAX: u16 = 42;
}

/// Socket group types.
pub mod group_type {
    /// Accept ratio: the member ports accept connections in the ratio of their weights
    /// while they compete; an idle port never holds the others back.
    pub const RATIO: u8 = 1;
    /// Accept rate: the member ports together accept at most `RATE` connections per
    /// second, with bursts of up to `BURST`.
    pub const RATE: u8 = 2;
    /// Output: every connection accepted from the member ports together sends at most
    /// `RATE` bytes per second, with bursts of up to `BURST`.
    pub const OUTPUT: u8 = 3;
    /// Highest type.
    pub const MAX: u8 = OUTPUT;
    /// Name of each type, by number.
    pub const NAMES: [(u8, &str); MAX as usize] =
        [(RATIO, "ratio"), (RATE, "rate"), (OUTPUT, "output")];
}

/// Bits of `GROUP_FLAGS` (of a group, or of one member port on `GROUP_PORT_ADD`).
pub mod group_flags {
    /// FTP: the member ports (of a group), or this member port, are FTP control ports.
    /// After a client's `PASV` or `EPSV` on a connection to one, the server's reply
    /// (`227`, `229`) is read; the data listener it announces joins the port's groups
    /// until its data connection is accepted (or a timeout), and that connection
    /// counts against them.
    pub const FTP: u32 = 1 << 0;
    /// Every flag this module version knows.
    pub const ALL: u32 = FTP;
}

/// Bits of `PRIO_FLAGS`.
pub mod prio_flags {
    /// Refuse an arrival at once if its expected wait (the connections held ahead of
    /// it, plus those in the server's queue, times the mean interval between the
    /// server's accepts) already exceeds its class's deadline.
    pub const EARLY_REFUSE: u32 = 1 << 0;
    /// Every flag this module version knows.
    pub const ALL: u32 = EARLY_REFUSE;
}

/// Attributes inside `PRIO_STATS`, all u64.
pub mod prio_stat {
    /// Connections of the class held now.
    pub const WAITING: u16 = 1;
    /// Connections of the class that entered the queue.
    pub const ADMITTED: u16 = 2;
    /// Connections released into the server's accept queue.
    pub const RELEASED: u16 = 3;
    /// Held connections reset to make room for a higher class.
    pub const PUSHED_OUT: u16 = 4;
    /// Held connections reset at their class's deadline.
    pub const EXPIRED: u16 = 5;
    /// Arrivals refused: the queue was full with nothing of a lower class to push out,
    /// or (`EARLY_REFUSE`) their expected wait exceeded the deadline.
    pub const REFUSED: u16 = 6;
    /// Sum over the released connections of the time from the handshake to the
    /// release, in nanoseconds.
    pub const DELAY_NS: u16 = 7;
    /// Held connections reset because the port had no listener that could take them
    /// when their turn came.
    pub const LOST: u16 = 8;
    /// Highest attribute.
    pub const MAX: u16 = 8;
    /// Name of each attribute (as in `Documentation/netlink/openqos.yaml`).
    pub const NAMES: [(u16, &str); MAX as usize] = [
        (WAITING, "waiting"),
        (ADMITTED, "admitted"),
        (RELEASED, "released"),
        (PUSHED_OUT, "pushed-out"),
        (EXPIRED, "expired"),
        (REFUSED, "refused"),
        (DELAY_NS, "delay-ns"),
        (LOST, "lost"),
    ];
}

/// Attributes inside `GROUP_STATS`, all u64.
pub mod group_stat {
    /// Connections accepted (ratio, rate) or bytes sent (output) through the group.
    pub const ADMITTED: u16 = 1;
    /// Times a caller was held back (slept, or got `EAGAIN`) because the quota was out.
    pub const HELD: u16 = 2;
    /// Tasks sleeping on the group's quota now.
    pub const SLEEPING: u16 = 3;
    /// Whole tokens in the bucket now (rate, output).
    pub const TOKENS: u16 = 4;
    /// FTP data listeners that joined the group since it exists.
    pub const FTP_JOINED: u16 = 5;
    /// Times the group's timer ran.
    pub const TIMER_RUNS: u16 = 6;
    /// Leases that ran out (the group went back to its fallback setting).
    pub const LEASE_EXPIRED: u16 = 7;
    /// Highest group statistics attribute.
    pub const MAX: u16 = 7;
    /// Name of each attribute (as in `Documentation/netlink/openqos.yaml`).
    pub const NAMES: [(u16, &str); MAX as usize] = [
        (ADMITTED, "admitted"),
        (HELD, "held"),
        (SLEEPING, "sleeping"),
        (TOKENS, "tokens"),
        (FTP_JOINED, "ftp-joined"),
        (TIMER_RUNS, "timer-runs"),
        (LEASE_EXPIRED, "lease-expired"),
    ];
}

/// Attributes inside `STATS`, all u64 counters.
pub mod stat {
    /// Connections that took the default port.
    pub const DEFAULT_HITS: u16 = 1;
    /// Connections moved into a target's accept queue.
    pub const FORWARDED: u16 = 2;
    /// Refused: no listener on the outgoing port.
    pub const NO_LISTENER: u16 = 3;
    /// Refused: the target's accept queue was full.
    pub const QUEUE_FULL: u16 = 4;
    /// Refused: the target listener's family cannot take the connection.
    pub const FAMILY_MISMATCH: u16 = 5;
    /// Refused: other reasons (Fast Open request, namespace going away, target closing).
    pub const OTHER_REFUSED: u16 = 6;
    /// Connections currently held in the module's own accept queues (and, for content
    /// rules, waiting for their first data).
    pub const WAITING: u16 = 7;
    /// Content rules: sent to the default port because no data came within the timeout.
    pub const TIMED_OUT: u16 = 8;
    /// Content rules: sent to the default port before their data came because more than
    /// `MAX_PENDING` connections were waiting for data (the oldest go first).
    pub const PENDING_FULL: u16 = 9;
    /// Content rules: bytes of connections' data the automaton stepped through. With
    /// scans resumed where the last look stopped, at most `LOOKAHEAD` per connection
    /// however its data is segmented (more only for connections whose scan was evicted
    /// from the rule's cache of `SCAN_CACHE` scans).
    pub const SCANNED: u16 = 10;
    /// Content rules: looks at connections' data (one per segment that arrives while a
    /// connection waits, and one per timer or drain that examines it).
    pub const LOOKS: u16 = 11;
    /// Highest statistics attribute.
    pub const MAX: u16 = 11;
    /// Name of each statistics attribute (as in `Documentation/netlink/openqos.yaml`).
    pub const NAMES: [(u16, &str); MAX as usize] = [
        (DEFAULT_HITS, "default-hits"),
        (FORWARDED, "forwarded"),
        (NO_LISTENER, "no-listener"),
        (QUEUE_FULL, "queue-full"),
        (FAMILY_MISMATCH, "family-mismatch"),
        (OTHER_REFUSED, "other-refused"),
        (WAITING, "waiting"),
        (TIMED_OUT, "timed-out"),
        (PENDING_FULL, "pending-full"),
        (SCANNED, "scanned"),
        (LOOKS, "looks"),
    ];
}

/// Attributes inside `METER_STATS`, all u64.
pub mod meter_stat {
    /// Connections waiting in the accept queues of the port's listeners now.
    pub const WAITING: u16 = 1;
    /// Connections accepted from the port since it is metered.
    pub const ACCEPTED: u16 = 2;
    /// Sum over the accepted connections of the time from the end of the handshake to
    /// `accept()`, in nanoseconds (resolution: one jiffy).
    pub const DELAY_NS: u16 = 3;
    /// Bytes the server received on connections accepted from the port (all reads,
    /// `splice` included), connections still open included.
    pub const RX_BYTES: u16 = 4;
    /// Bytes the server sent on connections accepted from the port (all writes,
    /// `sendfile` and `splice` included), connections still open included.
    pub const TX_BYTES: u16 = 5;
    /// Connections accepted from the port and still open.
    pub const OPEN: u16 = 6;
    /// Listening sockets of the port the meter sees.
    pub const LISTENERS: u16 = 7;
    /// How long the oldest connection waiting in the accept queues of the port's
    /// listeners has waited now (the head of each queue; the longest of them), in
    /// nanoseconds from the end of its handshake, on the clock of `DELAY_NS`: the delay
    /// the next `accept()` would count (resolution: one jiffy). 0 when none waits.
    pub const OLDEST_NS: u16 = 8;
    /// Highest meter statistics attribute.
    pub const MAX: u16 = 8;
    /// Name of each attribute (as in `Documentation/netlink/openqos.yaml`).
    pub const NAMES: [(u16, &str); MAX as usize] = [
        (WAITING, "waiting"),
        (ACCEPTED, "accepted"),
        (DELAY_NS, "delay-ns"),
        (RX_BYTES, "rx-bytes"),
        (TX_BYTES, "tx-bytes"),
        (OPEN, "open"),
        (LISTENERS, "listeners"),
        (OLDEST_NS, "oldest-ns"),
    ];
}

/// Bits of `METER_FLAGS`.
pub mod meter_flags {
    /// A rule sends connections to the port.
    pub const AUTO: u32 = 1 << 0;
    /// Metered on request (`METER_NEW`).
    pub const REQUESTED: u32 = 1 << 1;
    /// A member of a socket group.
    pub const GROUPED: u32 = 1 << 2;
    /// The port has a prioritized queue (`PRIO_SET`): its accepts release the next
    /// held connections.
    pub const PRIO: u32 = 1 << 3;
}

/// The delay histogram: logarithmic buckets of microseconds, four per power of two.
///
/// Bucket `i < 4` holds delays of exactly `i` µs; above, bucket `4 * (e - 1) + s` holds
/// `[(4 + s) << (e - 2), (5 + s) << (e - 2))` for `e >= 2`, `s` in `0..4`, so a bucket
/// is at most 25 % wide. The last bucket also holds every longer delay.
pub mod hist {
    /// Number of buckets (the last starts at about 15.3 hours).
    pub const BUCKETS: usize = 140;

    /// The bucket of a delay of `us` microseconds.
    pub const fn bucket(us: u64) -> usize {
        if us < 4 {
            return us as usize;
        }
        let e = 63 - us.leading_zeros() as usize;
        let s = ((us >> (e - 2)) & 3) as usize;
        let i = 4 * (e - 1) + s;
        if i >= BUCKETS {
            BUCKETS - 1
        } else {
            i
        }
    }

    /// The smallest delay (µs) of bucket `i`.
    pub const fn lower(i: usize) -> u64 {
        if i < 4 {
            return i as u64;
        }
        let e = i / 4 + 1;
        ((4 + (i % 4)) as u64) << (e - 2)
    }

    /// The first delay (µs) past bucket `i` (`u64::MAX` for the last).
    pub const fn upper(i: usize) -> u64 {
        if i + 1 >= BUCKETS {
            u64::MAX
        } else {
            lower(i + 1)
        }
    }

    /// The `q`-quantile (`q` in thousandths, 500 = median) of the histogram `counts`,
    /// in microseconds: the middle of the bucket holding it (the lower bound for the
    /// open-ended last bucket). `None` when the histogram is empty.
    pub fn quantile(counts: &[u64], q: u32) -> Option<u64> {
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        // The smallest rank whose cumulative share reaches q (rank 1..=total).
        let rank = ((u128::from(total) * u128::from(q.min(1000))).div_ceil(1000) as u64).max(1);
        let mut seen = 0u64;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, hi) = (lower(i), upper(i));
                return Some(if hi == u64::MAX {
                    lo
                } else {
                    lo + (hi - lo) / 2
                });
            }
        }
        None
    }
}

/// Limits enforced by the module (and checked early by the tools).
pub mod limits {
    /// Rules per network namespace.
    pub const MAX_RULES: usize = 256;
    /// Conditions per content or probabilistic rule.
    pub const MAX_CONDS: usize = 1024;
    /// Conditions per address rule: they are indexed (`addr::Index`, 24 bytes each), so
    /// their number does not slow the forwarding decision down.
    pub const MAX_ADDR_CONDS: usize = 10_000;
    /// Conditions a `RULE` or `RULE_MORE` of a `RULESET_REPLACE` carries at most when
    /// the tools encode it (IPv6 conditions are 40 bytes: 1,000 fit in the 64 KiB of a
    /// nested attribute).
    pub const CONDS_PER_NEST: usize = 1000;

    /// The most conditions a rule of type `kind` may have.
    pub const fn max_conds(kind: u8) -> usize {
        if kind == super::rule_type::ADDRESS {
            MAX_ADDR_CONDS
        } else {
            MAX_CONDS
        }
    }
    /// Longest chain of rules a connection may cross (incoming port to final server).
    pub const MAX_CHAIN_DEPTH: usize = 8;
    /// Backlog of the module's own listeners.
    pub const LISTEN_BACKLOG: u32 = 4096;
    /// Connections the forwarding hook handles per invocation before deferring the
    /// rest to process context.
    pub const HOOK_BUDGET: usize = 64;
    /// Sum of the weights of a probabilistic rule's conditions (1 = 1/10000).
    pub const WEIGHT_TOTAL: u64 = 10_000;
    /// Longest content string.
    pub const MAX_PATTERN: usize = 255;
    /// Total bytes of the strings of one content rule (bounds its automaton to 16,385
    /// states).
    pub const MAX_PATTERN_BYTES: usize = 16_384;
    /// Bytes of a connection's first data that content conditions look at. A string
    /// must end within them to match; it may be split across any number of segments.
    pub const LOOKAHEAD: usize = 2048;
    /// Connections waiting for decisive data in one listener of a content rule. Past
    /// it, the oldest waiting connection goes to the default port at once (counted as
    /// `PENDING_FULL`), so that new clients keep being classified. Below
    /// [`LISTEN_BACKLOG`], so the kernel never drops handshakes of a content rule.
    pub const MAX_PENDING: usize = 1024;
    /// Scans of waiting connections a content rule remembers, to resume where the last
    /// look stopped (16 bytes each): `MAX_PENDING` connections of one listener fit.
    pub const SCAN_CACHE: usize = 1024;
    /// Default and bounds of `DATA_TIMEOUT_MS`.
    pub const DATA_TIMEOUT_MS: u32 = 2000;
    /// Shortest data timeout.
    pub const DATA_TIMEOUT_MIN_MS: u32 = 10;
    /// Longest data timeout.
    pub const DATA_TIMEOUT_MAX_MS: u32 = 60_000;
    /// Metered ports per network namespace. Past it, rules still forward to new ports,
    /// unmetered.
    pub const MAX_METERS: usize = 1024;
    /// Listening sockets of one port a meter looks after (`SO_REUSEPORT` groups).
    pub const MAX_METER_LISTENERS: usize = 64;
    /// Socket groups per network namespace.
    pub const MAX_GROUPS: usize = 64;
    /// Highest socket group number.
    pub const MAX_GROUP_ID: u32 = 65_535;
    /// Ports per socket group.
    pub const MAX_GROUP_PORTS: usize = 16;
    /// FTP data listeners one metered port has joined to its groups at a time (each
    /// leaves when its data connection is accepted, after the data timeout, or when its
    /// server closes it).
    pub const MAX_FTP_DATA: usize = 256;
    /// Shortest lease of a group setting (`LEASE_MS`).
    pub const MIN_LEASE_MS: u32 = 100;
    /// Longest lease of a group setting: an hour.
    pub const MAX_LEASE_MS: u32 = 3_600_000;
    /// Largest `RATE` and `BURST`.
    pub const MAX_RATE: u64 = crate::quota::MAX_RATE;
    /// Smallest default burst of an output group, bytes.
    pub const MIN_OUTPUT_BURST: u64 = 4096;
    /// Prioritized ports per network namespace.
    pub const MAX_PRIO_PORTS: usize = 16;
    /// Classes of a prioritized port.
    pub const MAX_PRIO_CLASSES: u8 = 8;
    /// Default number of classes.
    pub const PRIO_CLASSES: u8 = 3;
    /// Largest `PRIO_CAP`: a push-out finds its victim's place in a queue of at most
    /// this many connections.
    pub const MAX_PRIO_HELD: u32 = 1024;
    /// Default `PRIO_CAP`.
    pub const PRIO_CAP: u32 = 256;
    /// Largest `PRIO_DEPTH`.
    pub const MAX_PRIO_DEPTH: u32 = 64;
    /// Default `PRIO_DEPTH`: one connection for the server to take while the next is
    /// being released.
    pub const PRIO_DEPTH: u32 = 2;
    /// Longest class deadline: an hour.
    pub const MAX_DEADLINE_MS: u32 = 3_600_000;
}

/// The kind of an attribute's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `NLA_U8`.
    U8,
    /// `NLA_U16`.
    U16,
    /// `NLA_U32`.
    U32,
    /// `NLA_U64`.
    U64,
    /// `NLA_BINARY` of `min..=max` bytes.
    Bytes(u16, u16),
    /// `NLA_NESTED`, holding attributes of this same policy (with `NLA_F_NESTED` set).
    Nested,
    /// Not accepted in requests (reply-only attribute).
    Reject,
}

/// Policy of one attribute: its kind and, for integers, the accepted inclusive range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttrPolicy {
    /// Attribute type.
    pub ty: u16,
    /// Name used in error messages and documentation.
    pub name: &'static str,
    /// Payload kind.
    pub kind: Kind,
    /// Smallest accepted value (integers only).
    pub min: u64,
    /// Largest accepted value (integers only).
    pub max: u64,
}

const fn int(ty: u16, name: &'static str, kind: Kind, min: u64, max: u64) -> AttrPolicy {
    AttrPolicy {
        ty,
        name,
        kind,
        min,
        max,
    }
}

const fn other(ty: u16, name: &'static str, kind: Kind) -> AttrPolicy {
    AttrPolicy {
        ty,
        name,
        kind,
        min: 0,
        max: 0,
    }
}

/// The request policy, indexed by attribute type minus one.
pub const POLICY: [AttrPolicy; attr::MAX as usize] = [
    int(attr::PORT, "port", Kind::U16, 1, 65535),
    int(
        attr::RULE_TYPE,
        "rule-type",
        Kind::U8,
        1,
        rule_type::MAX as u64,
    ),
    int(attr::DEFAULT_PORT, "default-port", Kind::U16, 1, 65535),
    int(
        attr::RULE_FLAGS,
        "rule-flags",
        Kind::U32,
        0,
        rule_flags::ALL as u64,
    ),
    int(
        attr::COND_INDEX,
        "cond-index",
        Kind::U32,
        1,
        limits::MAX_ADDR_CONDS as u64,
    ),
    int(attr::ADDR4, "addr4", Kind::U32, 0, u32::MAX as u64),
    int(attr::MASK4, "mask4", Kind::U32, 0, u32::MAX as u64),
    other(attr::ADDR6, "addr6", Kind::Bytes(16, 16)),
    int(attr::PREFIX6, "prefix6", Kind::U8, 0, 128),
    int(attr::OUT_PORT, "out-port", Kind::U16, 1, 65535),
    other(attr::COND, "cond", Kind::Nested),
    other(attr::HITS, "hits", Kind::Reject),
    other(attr::STATS, "stats", Kind::Reject),
    other(attr::PAD, "pad", Kind::Reject),
    int(attr::WEIGHT, "weight", Kind::U16, 1, limits::WEIGHT_TOTAL),
    other(
        attr::PATTERN,
        "pattern",
        Kind::Bytes(1, limits::MAX_PATTERN as u16),
    ),
    other(attr::STATES, "states", Kind::Reject),
    int(
        attr::DATA_TIMEOUT_MS,
        "data-timeout-ms",
        Kind::U32,
        limits::DATA_TIMEOUT_MIN_MS as u64,
        limits::DATA_TIMEOUT_MAX_MS as u64,
    ),
    other(attr::RULE, "rule", Kind::Nested),
    int(
        attr::REPLACE_FLAGS,
        "replace-flags",
        Kind::U32,
        0,
        replace_flags::ALL as u64,
    ),
    other(attr::METER_STATS, "meter-stats", Kind::Reject),
    other(attr::DELAY_HIST, "delay-hist", Kind::Reject),
    other(attr::METER_FLAGS, "meter-flags", Kind::Reject),
    int(
        attr::GROUP_ID,
        "group-id",
        Kind::U32,
        1,
        limits::MAX_GROUP_ID as u64,
    ),
    int(
        attr::GROUP_TYPE,
        "group-type",
        Kind::U8,
        1,
        group_type::MAX as u64,
    ),
    int(attr::RATE, "rate", Kind::U64, 1, limits::MAX_RATE),
    int(attr::BURST, "burst", Kind::U64, 1, limits::MAX_RATE),
    int(
        attr::GROUP_FLAGS,
        "group-flags",
        Kind::U32,
        0,
        group_flags::ALL as u64,
    ),
    other(attr::MEMBER, "member", Kind::Reject),
    other(attr::GROUP_STATS, "group-stats", Kind::Reject),
    int(
        attr::LEASE_MS,
        "lease-ms",
        Kind::U32,
        limits::MIN_LEASE_MS as u64,
        limits::MAX_LEASE_MS as u64,
    ),
    other(attr::FALLBACK_RATE, "fallback-rate", Kind::Reject),
    other(attr::RULE_MORE, "rule-more", Kind::Nested),
    int(
        attr::PRIO,
        "prio",
        Kind::U8,
        0,
        limits::MAX_PRIO_CLASSES as u64 - 1,
    ),
    int(
        attr::DEFAULT_PRIO,
        "default-prio",
        Kind::U8,
        0,
        limits::MAX_PRIO_CLASSES as u64 - 1,
    ),
    int(
        attr::PRIO_CLASSES,
        "prio-classes",
        Kind::U8,
        1,
        limits::MAX_PRIO_CLASSES as u64,
    ),
    int(
        attr::PRIO_CAP,
        "prio-cap",
        Kind::U32,
        1,
        limits::MAX_PRIO_HELD as u64,
    ),
    int(
        attr::PRIO_DEPTH,
        "prio-depth",
        Kind::U32,
        1,
        limits::MAX_PRIO_DEPTH as u64,
    ),
    int(
        attr::DEADLINE_MS,
        "deadline-ms",
        Kind::U32,
        0,
        limits::MAX_DEADLINE_MS as u64,
    ),
    int(
        attr::PRIO_FLAGS,
        "prio-flags",
        Kind::U32,
        0,
        prio_flags::ALL as u64,
    ),
    other(attr::PRIO_CLASS, "prio-class", Kind::Nested),
    other(attr::PRIO_STATS, "prio-stats", Kind::Reject),
];

/// Returns the policy of attribute `ty`, if it is one.
pub const fn policy(ty: u16) -> Option<&'static AttrPolicy> {
    if ty == 0 || ty > attr::MAX {
        None
    } else {
        Some(&POLICY[ty as usize - 1])
    }
}

/// The attributes that describe a condition's matcher, one kind per rule type, and its
/// optional priority class.
const MATCHERS: &[u16] = &[
    attr::ADDR4,
    attr::MASK4,
    attr::ADDR6,
    attr::PREFIX6,
    attr::WEIGHT,
    attr::PATTERN,
    attr::PRIO,
];

/// Attributes each command requires, and those it additionally accepts.
pub const fn command_attrs(cmd: u8) -> (&'static [u16], &'static [u16]) {
    match cmd {
        cmd::RULE_NEW => (
            &[attr::PORT, attr::RULE_TYPE, attr::DEFAULT_PORT],
            &[attr::RULE_FLAGS, attr::DATA_TIMEOUT_MS, attr::DEFAULT_PRIO],
        ),
        cmd::RULE_DEL => (&[attr::PORT], &[]),
        cmd::RULE_GET => (&[], &[attr::PORT]),
        cmd::COND_NEW => (&[attr::PORT, attr::OUT_PORT], MATCHERS),
        cmd::COND_SET => (&[attr::PORT, attr::OUT_PORT, attr::COND_INDEX], MATCHERS),
        cmd::COND_DEL => (&[attr::PORT, attr::COND_INDEX], &[]),
        cmd::RULESET_REPLACE => (&[], &[attr::RULE, attr::RULE_MORE, attr::REPLACE_FLAGS]),
        cmd::METER_NEW | cmd::METER_DEL => (&[attr::PORT], &[]),
        cmd::METER_GET => (&[], &[attr::PORT]),
        cmd::GROUP_NEW => (
            &[attr::GROUP_ID, attr::GROUP_TYPE],
            &[attr::RATE, attr::BURST, attr::GROUP_FLAGS],
        ),
        cmd::GROUP_DEL => (&[attr::GROUP_ID], &[]),
        cmd::GROUP_GET => (&[], &[attr::GROUP_ID]),
        cmd::GROUP_SET => (
            &[attr::GROUP_ID],
            &[
                attr::RATE,
                attr::BURST,
                attr::GROUP_FLAGS,
                attr::PORT,
                attr::WEIGHT,
                attr::LEASE_MS,
            ],
        ),
        cmd::GROUP_PORT_ADD => (
            &[attr::GROUP_ID, attr::PORT],
            &[attr::WEIGHT, attr::GROUP_FLAGS],
        ),
        cmd::GROUP_PORT_DEL => (&[attr::GROUP_ID, attr::PORT], &[]),
        cmd::PRIO_SET => (
            &[attr::PORT],
            &[
                attr::PRIO_CLASSES,
                attr::PRIO_CAP,
                attr::PRIO_DEPTH,
                attr::PRIO_FLAGS,
                attr::PRIO_CLASS,
            ],
        ),
        cmd::PRIO_DEL => (&[attr::PORT], &[]),
        cmd::PRIO_GET => (&[], &[attr::PORT]),
        _ => (&[], &[]),
    }
}

/// Attributes a nested attribute of a request requires, and those it additionally
/// accepts (`RULE` and `COND` of `RULESET_REPLACE`).
pub const fn nest_attrs(ty: u16) -> (&'static [u16], &'static [u16]) {
    match ty {
        attr::RULE => (
            &[attr::PORT, attr::RULE_TYPE, attr::DEFAULT_PORT],
            &[
                attr::RULE_FLAGS,
                attr::DATA_TIMEOUT_MS,
                attr::DEFAULT_PRIO,
                attr::COND,
            ],
        ),
        attr::RULE_MORE => (&[attr::PORT], &[attr::COND]),
        attr::COND => (&[attr::OUT_PORT], MATCHERS),
        attr::PRIO_CLASS => (&[attr::PRIO], &[attr::DEADLINE_MS]),
        _ => (&[], &[]),
    }
}

/// Returns whether `cmd` changes state (and so needs `CAP_NET_ADMIN`).
pub const fn is_mutation(cmd: u8) -> bool {
    !matches!(
        cmd,
        cmd::RULE_GET | cmd::METER_GET | cmd::GROUP_GET | cmd::PRIO_GET
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_is_indexed_by_type() {
        for (i, p) in POLICY.iter().enumerate() {
            assert_eq!(p.ty as usize, i + 1, "{}", p.name);
            assert_eq!(policy(p.ty), Some(p));
        }
        assert_eq!(policy(0), None);
        assert_eq!(policy(attr::MAX + 1), None);
    }

    #[test]
    fn histogram_buckets_tile_the_line() {
        assert_eq!(hist::bucket(0), 0);
        assert_eq!(hist::bucket(3), 3);
        assert_eq!(hist::bucket(4), 4);
        assert_eq!(hist::bucket(7), 7);
        assert_eq!(hist::bucket(8), 8);
        assert_eq!(hist::bucket(9), 8);
        assert_eq!(hist::bucket(10), 9);
        for i in 0..hist::BUCKETS - 1 {
            assert_eq!(hist::bucket(hist::lower(i)), i, "lower bound of {i}");
            assert_eq!(hist::bucket(hist::upper(i) - 1), i, "upper bound of {i}");
            assert!(hist::upper(i) - hist::lower(i) <= hist::lower(i).max(4) / 4 + 1);
        }
        assert_eq!(hist::bucket(u64::MAX), hist::BUCKETS - 1);
        // 4 ms and 200 ms land in buckets at most 25 % wide.
        let b = hist::bucket(200_000);
        assert!(hist::lower(b) <= 200_000 && 200_000 < hist::upper(b));
    }

    #[test]
    fn quantiles_pick_the_right_bucket() {
        let mut h = [0u64; hist::BUCKETS];
        assert_eq!(hist::quantile(&h, 500), None);
        h[hist::bucket(1_000)] = 50;
        h[hist::bucket(100_000)] = 40;
        h[hist::bucket(1_000_000)] = 10;
        let near = |v: u64, want: u64| v.abs_diff(want) * 8 <= want;
        assert!(near(hist::quantile(&h, 500).unwrap(), 1_000));
        assert!(near(hist::quantile(&h, 510).unwrap(), 100_000));
        assert!(near(hist::quantile(&h, 900).unwrap(), 100_000));
        assert!(near(hist::quantile(&h, 990).unwrap(), 1_000_000));
        assert!(near(hist::quantile(&h, 1000).unwrap(), 1_000_000));
    }

    #[test]
    fn commands_only_use_request_attributes() {
        for c in 1..=cmd::MAX {
            let (req, opt) = command_attrs(c);
            for a in req.iter().chain(opt) {
                assert_ne!(policy(*a).unwrap().kind, Kind::Reject);
            }
        }
        for n in [attr::RULE, attr::COND, attr::PRIO_CLASS] {
            assert_eq!(policy(n).unwrap().kind, Kind::Nested);
            let (req, opt) = nest_attrs(n);
            for a in req.iter().chain(opt) {
                assert_ne!(policy(*a).unwrap().kind, Kind::Reject);
            }
        }
    }
}
