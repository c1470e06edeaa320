// SPDX-License-Identifier: GPL-2.0

//! The classifier: rules, their conditions, and the forwarding decision.
//!
//! A rule owns an incoming port. The module listens there itself ([`ModuleListener`]) and
//! for every established connection picks an outgoing port: the first condition, in the
//! order added, that the connection satisfies, else the rule's default port. The
//! connection is then moved into the accept queue of whoever listens on that port.
//!
//! The hook never takes a lock of the configuration. It reads the rule's [`Policy`] in
//! force, an immutable snapshot replaced as a whole on every change (so a connection sees
//! either the old or the new condition list, never a mix). A rule set replacement
//! switches every rule of the namespace at once ([`Epoch`]), so the rules in force always
//! form one set that passed the chain check. Making and changing rules, under the
//! namespace's lock, is the per-namespace store's (`qos_store.rs`).
//!
//! Layering: below the store, above the sensors (the rules' counters, the rescan kick),
//! the socket core (`ModuleListener`, which sees this file only through [`Forwarder`]) and
//! the error leaf. It does not import the actuators: groups act on the servers' side.

use crate::{
    abi::{self, limits, rule_flags, rule_type},
    addr::{self, Client, Prefix},
    content::{Dfa, ScanCache, Slot, Tables, TablesError},
    prob,
    qos_error::{reject, Rejection},
    qos_prio::{Admit, PrioCore, PrioTable},
    qos_sensor::{self, Counter, RuleStats},
    qos_sock::{
        ChildOutcome, DrainCx, Drained, Family, Forwarder, ListenSock, LockedChild, ModuleListener,
        MoveError, Moved, NetRef, PeekEnd, Peer, QueueHead, Target,
    },
};
use kernel::{
    bindings, c_str,
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Relaxed, Release},
        new_spinlock_irq, rcu, Arc, SpinLockIrq,
    },
};

/// What a condition tests.
#[derive(PartialEq)]
pub(crate) enum Matcher {
    /// Address rules: the client's source address is in this prefix.
    Addr(Prefix),
    /// Probabilistic rules: taken with probability `weight / 10000`.
    Weight(u16),
    /// Content rules: the client's first data contains this string.
    Content(KVec<u8>),
}

/// Strings that end a client's first data for content rules: the empty line that ends an
/// HTTP (or SMTP-style) header block. Once one is seen, data that matched no condition
/// goes to the default port without waiting for more.
const TERMINATORS: [&[u8]; 2] = [b"\r\n\r\n", b"\n\n"];

fn too_many_pattern_bytes() -> Rejection {
    reject(
        ENOSPC,
        c_str!("the strings of a content rule exceed 16384 bytes in total"),
        Some(abi::attr::PATTERN),
    )
}

/// The automaton of a content rule: its conditions' strings, then [`TERMINATORS`].
pub(crate) struct Automaton {
    tables: Tables<KVVec<u16>>,
    /// Number of conditions (strings below this index are conditions).
    conds: usize,
    /// Where the scans of waiting connections stopped, by socket cookie.
    scans: Pin<KBox<SpinLockIrq<ScanCache<KVVec<Slot>>>>>,
}

impl Automaton {
    /// Builds the automaton of `conds`' strings. Process context (allocates).
    fn build(conds: &[Arc<Cond>], nocase: bool) -> Result<Self, Rejection> {
        let strings = conds.iter().filter_map(|c| match &c.matcher {
            Matcher::Content(p) => Some(&p[..]),
            _ => None,
        });
        // Charged to the memory cgroup of the task configuring the rule (an unprivileged
        // user can own a namespace).
        let alloc = |n| KVVec::from_elem(0u16, n, kernel::alloc::flags::GFP_KERNEL_ACCOUNT);
        let tables = Tables::build(
            Iterator::chain(strings, TERMINATORS.iter().copied()),
            nocase,
            alloc,
        )
        .map_err(|e| match e {
            TablesError::Alloc(e) => e.into(),
            TablesError::Build(_) => too_many_pattern_bytes(),
        })?;
        let slots = KVVec::from_elem(
            Slot::EMPTY,
            limits::SCAN_CACHE,
            kernel::alloc::flags::GFP_KERNEL_ACCOUNT,
        )?;
        let scans = KBox::pin_init(
            new_spinlock_irq!(ScanCache::new(slots), "openqos_scan_cache"),
            GFP_KERNEL_ACCOUNT,
        )?;
        Ok(Self {
            tables,
            conds: conds.len(),
            scans,
        })
    }

    fn dfa(&self) -> Dfa<'_> {
        self.tables.dfa()
    }

    /// Number of states.
    pub(crate) fn states(&self) -> usize {
        self.tables.states()
    }
}

/// Where a content rule sends a connection, given its first data so far.
enum Verdict<'a> {
    /// Not decided yet: wait for more data.
    Wait,
    /// The first condition (in the order added) whose string was found.
    Cond(&'a Cond),
    /// The data is complete and matched nothing.
    Default,
}

/// One condition: a matcher and the port it sends to. Conditions are shared by the
/// policy snapshots that contain them, so their counters survive edits of the rule.
pub(crate) struct Cond {
    /// What it tests.
    pub(crate) matcher: Matcher,
    /// Outgoing port.
    pub(crate) out: u16,
    /// Priority class at the outgoing port (used if it has a prioritized queue).
    pub(crate) prio: Option<u8>,
    /// Connections that matched.
    pub(crate) hits: Counter,
}

/// The settings that make a rule a content rule.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct ContentOpts {
    /// Strings match ignoring ASCII case.
    pub(crate) nocase: bool,
    /// How long a connection may wait for decisive data, in milliseconds.
    pub(crate) timeout_ms: u32,
}

impl ContentOpts {
    /// Checks the settings of a rule of type `kind`: the content options of a content
    /// rule (`None` for other types).
    pub(crate) fn of(
        kind: u8,
        flags: u32,
        timeout_ms: Option<u32>,
    ) -> Result<Option<Self>, Rejection> {
        let nocase = flags & rule_flags::NOCASE != 0;
        match (kind, timeout_ms) {
            (rule_type::CONTENT, t) => Ok(Some(Self {
                nocase,
                timeout_ms: t.unwrap_or(limits::DATA_TIMEOUT_MS),
            })),
            (_, Some(_)) => Err(reject(
                EINVAL,
                c_str!("a data timeout is for content rules"),
                Some(abi::attr::DATA_TIMEOUT_MS),
            )),
            _ if nocase => Err(reject(
                EINVAL,
                c_str!("case-insensitive matching is for content rules"),
                Some(abi::attr::RULE_FLAGS),
            )),
            _ => Ok(None),
        }
    }
}

/// An immutable snapshot of a rule's forwarding decision. Everything the hooks need is
/// here, so that one swap changes a rule completely (even its type, on restore).
pub(crate) struct Policy {
    /// Port used when no condition matches.
    pub(crate) default_port: u16,
    /// Priority class at the default port.
    pub(crate) default_prio: Option<u8>,
    /// Conditions, tried in order.
    pub(crate) conds: KVec<Arc<Cond>>,
    /// Content rules: their options.
    pub(crate) content: Option<ContentOpts>,
    /// Content rules with at least one condition: the automaton of their strings.
    pub(crate) automaton: Option<Automaton>,
    /// Address rules with at least one condition: the index of their prefixes.
    addrs: Option<AddrIndex>,
}

/// The index of an address rule's conditions ([`addr::Index`]): the first condition a
/// client satisfies, found at a cost that does not grow with their number. Built in
/// process context with the policy and replaced with it; 24 bytes per condition,
/// charged to the caller's memory cgroup (as the conditions, their list and the policy
/// are).
pub(crate) struct AddrIndex {
    entries: KVec<addr::Entry>,
    groups: KVec<addr::Group>,
    odd: KVec<addr::Odd>,
}

impl AddrIndex {
    /// The index of the address conditions among `conds`, by their position.
    fn build(conds: &[Arc<Cond>]) -> Result<Self, Rejection> {
        let prefixes = || {
            conds
                .iter()
                .enumerate()
                .filter_map(|(i, c)| match c.matcher {
                    Matcher::Addr(p) => Some((u32::try_from(i).unwrap_or(u32::MAX), p)),
                    _ => None,
                })
        };
        let s = addr::Index::sizes(prefixes().map(|(_, p)| p));
        let mut entries = KVec::from_elem(addr::Entry::default(), s.entries, GFP_KERNEL_ACCOUNT)?;
        let mut groups = KVec::from_elem(addr::Group::default(), s.groups, GFP_KERNEL_ACCOUNT)?;
        let mut odd = KVec::from_elem(addr::Odd::default(), s.odd, GFP_KERNEL_ACCOUNT)?;
        // The sizes come from the same list: `build` cannot find the storage wrong.
        let used =
            addr::Index::build(prefixes(), &mut entries, &mut groups, &mut odd).ok_or(EINVAL)?;
        entries.truncate(used);
        Ok(Self {
            entries,
            groups,
            odd,
        })
    }

    /// The position of the first condition `client` satisfies.
    fn lookup(&self, client: &Client) -> Option<usize> {
        addr::Index::new(&self.entries, &self.groups, &self.odd)
            .lookup(client)
            .map(|p| p as usize)
    }
}

impl Policy {
    /// Builds the policy of a rule of type `kind` from its complete condition list,
    /// checking that every condition fits the type and that the list is within the
    /// limits; for a content rule (`content`), with its automaton.
    pub(crate) fn new(
        kind: u8,
        default_port: u16,
        default_prio: Option<u8>,
        conds: KVec<Arc<Cond>>,
        content: Option<ContentOpts>,
    ) -> Result<Arc<Self>, Rejection> {
        if conds.len() > limits::max_conds(kind) {
            return Err(too_many_conds());
        }
        let (mut weights, mut bytes) = (0u64, 0usize);
        for c in conds.iter() {
            check_matcher(kind, &c.matcher)?;
            match &c.matcher {
                Matcher::Weight(w) => weights += u64::from(*w),
                Matcher::Content(p) => bytes += p.len(),
                Matcher::Addr(_) => {}
            }
        }
        if weights > limits::WEIGHT_TOTAL {
            return Err(reject(
                EINVAL,
                c_str!("the weights of a rule add up to more than 10000"),
                Some(abi::attr::WEIGHT),
            ));
        }
        if bytes > limits::MAX_PATTERN_BYTES {
            return Err(too_many_pattern_bytes());
        }
        let automaton = match content {
            Some(c) if !conds.is_empty() => Some(Automaton::build(&conds, c.nocase)?),
            _ => None,
        };
        let addrs = match kind {
            rule_type::ADDRESS if !conds.is_empty() => Some(AddrIndex::build(&conds)?),
            _ => None,
        };
        Ok(Arc::new(
            Policy {
                default_port,
                default_prio,
                conds,
                content,
                automaton,
                addrs,
            },
            GFP_KERNEL_ACCOUNT,
        )?)
    }

    /// Judges the first data of the connection with socket cookie `key`, read through
    /// `peek(skip, max, feed)`, which feeds the bytes from offset `skip` to `max`. The
    /// scan resumes where the last look at this connection stopped (if still cached), so
    /// a connection's data is stepped through once however it is segmented; the bytes
    /// stepped through and the look are counted in `stats`. `None`: the data could not be
    /// read now.
    fn judge(
        &self,
        key: u64,
        stats: &RuleStats,
        peek: impl FnOnce(u32, u32, &mut dyn FnMut(&[u8]) -> bool) -> Option<PeekEnd>,
    ) -> Option<Verdict<'_>> {
        let Some(a) = &self.automaton else {
            return Some(Verdict::Default);
        };
        let dfa = a.dfa();
        // Taken out of the cache: a connection decided at this look costs one lookup and
        // leaves nothing to forget; an undecided one is put back below.
        let cached = a.scans.lock().take(key);
        let mut scan = cached.unwrap_or_default();
        let from = scan.seen;
        let Some(end) = peek(from as u32, limits::LOOKAHEAD as u32, &mut |data| {
            scan.feed(&dfa, data);
            // Condition 0 cannot be beaten: stop there.
            scan.best != 0
        }) else {
            // Not readable now: the next look resumes from where the last one stopped.
            if let Some(c) = cached {
                a.scans.lock().put(key, &c);
            }
            return None;
        };
        stats.looks.inc();
        stats.scanned.add((scan.seen - from) as u64);
        let verdict = match scan.found() {
            Some(i) if i < a.conds => self
                .conds
                .get(i)
                .map_or(Verdict::Default, |c| Verdict::Cond(c)),
            // Only the end of a header block: complete, and nothing matched.
            Some(_) => Verdict::Default,
            None if end.fin || end.full => Verdict::Default,
            None => Verdict::Wait,
        };
        // Kept only while undecided.
        if let Verdict::Wait = verdict {
            a.scans.lock().put(key, &scan);
        }
        Some(verdict)
    }

    /// The condition that chooses the outgoing port for `client` (`None`: the default
    /// port).
    fn classify(&self, client: &Client) -> Option<&Cond> {
        if let Some(ix) = &self.addrs {
            return ix
                .lookup(client)
                .and_then(|i| self.conds.get(i))
                .map(|c| &**c);
        }
        let mut draw = None;
        self.conds.iter().map(|c| &**c).find(|c| match c.matcher {
            Matcher::Addr(ref p) => p.matches(client),
            Matcher::Content(_) => false,
            Matcher::Weight(w) => {
                // One uniform draw in [0, 10000) per connection, walked down the weights
                // (`prob`, proven exact on the host): condition i wins with probability
                // w_i / 10000.
                draw.get_or_insert_with(|| {
                    // SAFETY: plain function call; the bound is non-zero.
                    prob::Draw::new(unsafe {
                        bindings::__get_random_u32_below(limits::WEIGHT_TOTAL as u32)
                    })
                })
                .take(w)
            }
        })
    }

    /// Every port this policy may forward to.
    pub(crate) fn targets(&self) -> impl Iterator<Item = u16> + '_ {
        Iterator::chain(
            core::iter::once(self.default_port),
            self.conds.iter().map(|c| c.out),
        )
    }

    /// A copy of the condition list with room for `extra` more.
    pub(crate) fn try_clone(&self, extra: usize) -> Result<KVec<Arc<Cond>>> {
        let mut conds = KVec::with_capacity(self.conds.len() + extra, GFP_KERNEL_ACCOUNT)?;
        for c in self.conds.iter() {
            conds.push(c.clone(), GFP_KERNEL_ACCOUNT)?;
        }
        Ok(conds)
    }
}

/// Which of the two policy slots of every rule of a namespace is in force.
///
/// A rule set replacement stages each rule's new policy (or none, for a rule that goes)
/// in the slot not in force, creates the listeners of new rules with nothing in force
/// (they hold their connections), and then flips this one value: every hook of the
/// namespace switches from the old set to the new one at the same instant. A connection
/// is therefore only ever forwarded by rules of one checked set at a time, and no mix of
/// old and new rules (which together can form a chain through every rule, or a cycle)
/// is ever live.
pub(crate) struct Epoch(Atomic<u32>);

impl Epoch {
    /// A new epoch: slot 0 in force.
    pub(crate) fn new() -> Self {
        Epoch(Atomic::new(0))
    }

    /// The slot in force.
    pub(crate) fn current(&self) -> usize {
        (self.0.load(Acquire) & 1) as usize
    }

    /// The slot a replacement stages into. Only changes under the namespace's mutex.
    pub(crate) fn staging(&self) -> usize {
        self.current() ^ 1
    }

    /// Puts the staged slot in force. Under the namespace's mutex.
    pub(crate) fn flip(&self) {
        self.0.store(self.0.load(Relaxed).wrapping_add(1), Release);
    }
}

/// State of a rule shared between configuration and its listeners' hooks.
#[pin_data]
pub(crate) struct RuleShared {
    /// The policy of each [`Epoch`] slot; `None`: the rule does not exist in that one.
    #[pin]
    policy: SpinLockIrq<[Option<Arc<Policy>>; 2]>,
    /// The namespace's switch between the slots.
    epoch: Arc<Epoch>,
    /// The namespace's prioritized ports.
    prios: Arc<PrioTable>,
    /// Whether a policy of either slot is a content rule's, readable without the lock: the
    /// hooks of children with new data, and rules handing connections over, look at it
    /// first.
    wants_data: Atomic<bool>,
    /// Outcome counters.
    pub(crate) stats: RuleStats,
}

impl RuleShared {
    /// The policy in force, if the rule exists in the set in force. The lock is held only
    /// to take a reference; the epoch is read under it, so a slot is never read after a
    /// later replacement began to stage into it.
    fn in_force(&self) -> Option<Arc<Policy>> {
        let slots = self.policy.lock();
        slots[self.epoch.current()].clone()
    }

    /// Sets the policy of `slot`.
    pub(crate) fn stage(&self, slot: usize, new: Option<Arc<Policy>>) {
        let mut guard = self.policy.lock();
        let other = guard[slot ^ 1]
            .as_ref()
            .is_some_and(|p| p.content.is_some());
        let wants = other || new.as_ref().is_some_and(|p| p.content.is_some());
        self.wants_data.store(wants, Relaxed);
        let old = core::mem::replace(&mut guard[slot], new);
        drop(guard);
        // The old snapshot is freed here, outside the lock, or by the last hook using it.
        drop(old);
    }

    /// Whether the rule looks at the first data of its connections. A hint: a change of
    /// rule type may be in flight; the policy snapshot decides.
    fn wants_data(&self) -> bool {
        self.wants_data.load(Relaxed)
    }
}

/// Why a connection goes where it goes (for the counters).
#[derive(Clone, Copy)]
enum Why<'a> {
    /// A condition matched.
    Cond(&'a Cond),
    /// No condition matched.
    Default,
    /// Content rules: no decisive data within the data timeout.
    TimedOut,
    /// Content rules: too many connections were waiting for data.
    PendingFull,
}

impl Why<'_> {
    fn port(&self, policy: &Policy) -> u16 {
        match self {
            Why::Cond(c) => c.out,
            _ => policy.default_port,
        }
    }

    fn prio(&self, policy: &Policy) -> Option<u8> {
        match self {
            Why::Cond(c) => c.prio,
            _ => policy.default_prio,
        }
    }
}

/// Where a classified connection goes: into the server's listener, or, for a class at a
/// prioritized port, into the park of its class.
enum Dest<'a> {
    /// The listener that a connection to the port reaches (`None`: nobody listens).
    Server(Option<Target<'a>>),
    /// The queue of a prioritized port, class and target park.
    Park(&'a PrioCore, u8, Target<'a>),
    /// Past a prioritized port's queue, which holds nothing, straight to the server.
    Passed(&'a PrioCore, u8, Target<'a>),
    /// Refused by the prioritized port's queue (full, or too late for its deadline).
    Refused,
}

/// What the drain does after handling one connection.
enum Step {
    /// Go on with the next head.
    Next,
    /// Stop draining.
    Stop(Drained),
}

/// The [`Forwarder`] of a rule's listeners. What it does depends on the rule's current
/// [`Policy`] only, so a rule can change type without changing listeners.
pub(crate) struct Forward {
    shared: Arc<RuleShared>,
}

impl Forward {
    /// Where the head goes. `Err`: the drain stops (the head waits for data, or needs
    /// process context to be examined). `known`: the verdict on the data of the child
    /// whose lock the drainer holds, already judged by its hook.
    fn pick_head<'p>(
        &self,
        l: &ModuleListener<Self>,
        cx: &DrainCx<'_>,
        policy: &'p Policy,
        known: Option<Why<'p>>,
        head: &QueueHead,
        peer: &Peer,
    ) -> Result<Why<'p>, Drained> {
        let Some(timeout) = policy.content.map(|c| c.timeout_ms) else {
            return Ok(policy
                .classify(&peer.client())
                .map_or(Why::Default, Why::Cond));
        };
        if policy.automaton.is_none() {
            return Ok(Why::Default);
        }
        // The data decided before any deadline could: do not scan it a second time.
        if let (Some(why), Some(c)) = (known, cx.locked()) {
            if head.is(c) {
                return Ok(why);
            }
        }
        let age = peer.age_ms();
        if age >= timeout {
            return Ok(Why::TimedOut);
        }
        // The queue holds every connection still waiting for data: past the cap, the
        // oldest goes to the default port, so new (honest) clients keep being classified.
        if l.sock().waiting() as usize > limits::MAX_PENDING {
            return Ok(Why::PendingFull);
        }
        let stats = &self.shared.stats;
        let verdict = match cx.locked() {
            Some(c) if head.is(c) => {
                policy.judge(c.cookie(), stats, |skip, max, f| Some(c.peek(skip, max, f)))
            }
            // A child's hook could not drain: look at the head's data from process context.
            _ if l.take_peek_head() => {
                let key = l.head_cookie(cx, head);
                let peek = |skip, max, f: &mut dyn FnMut(&[u8]) -> bool| {
                    l.peek_head(cx, head, skip, max, f)
                };
                match policy.judge(key, stats, peek) {
                    // The next head may also hold data no hook will report again (it
                    // came while the rule was held by a replacement): look at it too.
                    Some(v @ (Verdict::Cond(_) | Verdict::Default)) => {
                        l.want_peek_head();
                        Some(v)
                    }
                    Some(v) => Some(v),
                    None => {
                        l.want_peek_head();
                        return Err(Drained::Defer);
                    }
                }
            }
            // Otherwise the head's own hook handles its data when it comes.
            _ => Some(Verdict::Wait),
        };
        match verdict {
            Some(Verdict::Cond(c)) => Ok(Why::Cond(c)),
            Some(Verdict::Default) => Ok(Why::Default),
            Some(Verdict::Wait) | None => Err(Drained::Wait(timeout - age)),
        }
    }

    /// Moves (or, in process context, refuses) the head of the queue.
    fn deliver(
        &self,
        l: &ModuleListener<Self>,
        cx: &DrainCx<'_>,
        policy: &Policy,
        head: &QueueHead,
        peer: &Peer,
        why: Why<'_>,
    ) -> Step {
        let moved = {
            let rcu = rcu::read_lock();
            let prio = self.prio_of(why, policy);
            match self.dest(l, &rcu, prio.as_ref(), peer, why.port(policy), cx.process()) {
                Dest::Server(Some(target)) if wants_data(&target) => {
                    l.hand_over_head(cx, head, &target)
                }
                Dest::Server(Some(target)) => l.move_head(cx, head, &target),
                Dest::Server(None) => Err(MoveError::NoListener),
                Dest::Park(core, class, park) => {
                    let r = l.move_head(cx, head, &park);
                    if r.is_ok() {
                        core.entered(class);
                    }
                    r
                }
                Dest::Passed(core, class, target) => {
                    let r = l.move_head(cx, head, &target);
                    if r.is_ok() {
                        core.passed(class, peer.age_ms());
                    }
                    r
                }
                Dest::Refused => Err(MoveError::Full),
            }
        };
        let stats = &self.shared.stats;
        match moved {
            Ok(_) => stats.forwarded.inc(),
            Err(MoveError::Race) => return Step::Next,
            // Refusing needs `accept()`, and handing a connection over to a content rule
            // needs its lock: both need process context.
            Err(_) if !cx.process() => {
                if policy.content.is_some() {
                    l.want_peek_head();
                }
                return Step::Stop(Drained::Defer);
            }
            Err(e) => {
                if l.refuse_head(cx).is_err() {
                    return Step::Stop(Drained::Defer);
                }
                stats.refused(e);
            }
        }
        self.count(why);
        Step::Next
    }

    /// The prioritized queue of the port `why` sends to, and the connection's class: if
    /// it has a class and the port a queue (only then is the namespace's table read).
    fn prio_of(&self, why: Why<'_>, policy: &Policy) -> Option<(Arc<PrioCore>, u8)> {
        let class = why.prio(policy)?;
        Some((self.shared.prios.find(why.port(policy))?, class))
    }

    /// Where a connection to `port` with the addresses `peer` goes: with `prio` (the
    /// port's prioritized queue and the connection's class), the queue decides
    /// (`count`: a refusal is final and counted); else the listener of the port.
    fn dest<'a>(
        &self,
        l: &ModuleListener<Self>,
        rcu: &'a rcu::Guard,
        prio: Option<&'a (Arc<PrioCore>, u8)>,
        peer: &Peer,
        port: u16,
        count: bool,
    ) -> Dest<'a> {
        match prio {
            Some((core, class)) => match core.admit(*class, peer, count) {
                Admit::Direct(depth, park, c) => match lookup(l.sock(), rcu, peer, port) {
                    Some(t) if t.waiting() < depth && !wants_data(&t) => Dest::Passed(core, c, t),
                    _ => Dest::Park(core, c, park.target()),
                },
                Admit::Park(park, c) => Dest::Park(core, c, park.target()),
                Admit::Refuse => Dest::Refused,
            },
            None => Dest::Server(lookup(l.sock(), rcu, peer, port)),
        }
    }

    /// [`Forwarder::drain`] with the policy snapshot `policy`, and the verdict `known`
    /// on the locked child's data (see [`Forward::pick_head`]).
    fn drain_with<'p>(
        &self,
        l: &ModuleListener<Self>,
        cx: &DrainCx<'_>,
        policy: &'p Policy,
        known: Option<Why<'p>>,
    ) -> Drained {
        for _ in 0..limits::HOOK_BUDGET {
            // Address and probabilistic heads leave the queue now; content heads may stay.
            let Some((head, peer)) = l.queue_head(cx, policy.content.is_none()) else {
                return Drained::Empty;
            };
            let why = match self.pick_head(l, cx, policy, known, &head, &peer) {
                Ok(why) => why,
                Err(d) => return d,
            };
            if let Step::Stop(d) = self.deliver(l, cx, policy, &head, &peer, why) {
                return d;
            }
        }
        Drained::Defer
    }

    fn count(&self, why: Why<'_>) {
        let stats = &self.shared.stats;
        match why {
            Why::Cond(c) => c.hits.inc(),
            Why::Default => stats.default_hits.inc(),
            Why::TimedOut => {
                stats.timed_out.inc();
                stats.default_hits.inc();
            }
            Why::PendingFull => {
                stats.pending_full.inc();
                stats.default_hits.inc();
            }
        }
    }
}

impl Forwarder for Forward {
    fn drain(&self, l: &ModuleListener<Self>, cx: &DrainCx<'_>) -> Drained {
        // One snapshot for the whole batch: a change made meanwhile applies from the next
        // batch on, and every connection still sees one complete condition list.
        match self.shared.in_force() {
            Some(policy) => self.drain_with(l, cx, &policy, None),
            None => Drained::Held,
        }
    }

    fn child_data(&self, l: &ModuleListener<Self>, child: &LockedChild<'_>) -> ChildOutcome {
        if !self.shared.wants_data() {
            return ChildOutcome::Release;
        }
        let Some(policy) = self.shared.in_force() else {
            // A replacement is switching: its `resume` has the data looked at.
            return ChildOutcome::Keep;
        };
        if policy.content.is_none() {
            return ChildOutcome::Release;
        }
        let why = match policy.judge(child.cookie(), &self.shared.stats, |skip, max, f| {
            Some(child.peek(skip, max, f))
        }) {
            Some(Verdict::Cond(c)) => Why::Cond(c),
            Some(Verdict::Default) => Why::Default,
            Some(Verdict::Wait) | None => return ChildOutcome::Keep,
        };
        let moved = {
            let rcu = rcu::read_lock();
            let prio = self.prio_of(why, &policy);
            match self.dest(
                l,
                &rcu,
                prio.as_ref(),
                &child.peer(),
                why.port(&policy),
                false,
            ) {
                Dest::Server(Some(target)) => l.move_child(child, &target, wants_data(&target)),
                Dest::Server(None) => Err(MoveError::NoListener),
                Dest::Park(core, class, park) => {
                    let r = l.move_child(child, &park, false);
                    if r.is_ok() {
                        core.entered(class);
                    }
                    r
                }
                Dest::Passed(core, class, target) => {
                    let r = l.move_child(child, &target, false);
                    if r.is_ok() {
                        core.passed(class, child.peer().age_ms());
                    }
                    r
                }
                // The drainer refuses it, in process context.
                Dest::Refused => Err(MoveError::Full),
            }
        };
        match moved {
            Ok(moved) => {
                self.shared.stats.forwarded.inc();
                self.count(why);
                if moved == Moved::HandedOver {
                    return ChildOutcome::Again;
                }
            }
            // Already moved by the drainer (it saw the same data).
            Err(MoveError::Race) => {}
            // The head, or a connection to refuse: that is the drainer's job. Become the
            // drainer, put this child at the head, and drain from there (it sees the child
            // is the one whose lock we hold). If another context drains, the work item
            // looks at the head later.
            Err(_) => {
                let mut again = false;
                l.drain_for(child, &mut |cx| {
                    let d = if l.promote(cx, child) {
                        self.drain_with(l, cx, &policy, Some(why))
                    } else {
                        Drained::Empty
                    };
                    again = cx.handed_over();
                    d
                });
                if again {
                    return ChildOutcome::Again;
                }
            }
        }
        ChildOutcome::Keep
    }
}

/// The listener a connection to `port` reaches. A bare one (neither a module listener
/// nor metered yet) makes the sensors rescan soon: a server may have started listening
/// on a metered port since they last looked.
fn lookup<'a>(
    sock: &ListenSock,
    rcu: &'a rcu::Guard,
    peer: &Peer,
    port: u16,
) -> Option<Target<'a>> {
    let target = sock.lookup(rcu, peer, port)?;
    if target.bare() {
        qos_sensor::kick_rescan();
    }
    Some(target)
}

/// Whether `target` is the listener of a content rule, which must see the data a
/// connection already has: chains into content rules hand connections over with the
/// hook instead of just moving them.
fn wants_data(target: &Target<'_>) -> bool {
    target
        .module::<Forward>()
        .is_some_and(|m| m.fwd.shared.wants_data())
}

/// A configured rule.
pub(crate) struct Rule {
    /// Incoming port.
    pub(crate) port: u16,
    /// One of [`rule_type`].
    pub(crate) kind: u8,
    /// Bits of [`rule_flags`].
    pub(crate) flags: u32,
    /// The configured policy (what dumps show and changes start from). Once a
    /// replacement is done, the one in force in the hooks.
    pub(crate) policy: Arc<Policy>,
    /// Policy in force and counters.
    pub(crate) shared: Arc<RuleShared>,
    pub(crate) listeners: KVec<Pin<KBox<ModuleListener<Forward>>>>,
}

impl Rule {
    /// Creates the rule on `port` of `net` with `policy` in `slot` of `epoch` (the other
    /// slot holds none): its listeners listen at once, and forward if `slot` is in force.
    #[expect(clippy::too_many_arguments)]
    pub(crate) fn new(
        net: NetRef,
        epoch: &Arc<Epoch>,
        prios: &Arc<PrioTable>,
        slot: usize,
        port: u16,
        kind: u8,
        flags: u32,
        policy: Arc<Policy>,
    ) -> Result<Self, Rejection> {
        let mut slots = [None, None];
        slots[slot & 1] = Some(policy.clone());
        let wants_data = policy.content.is_some();
        let shared = Arc::pin_init(
            pin_init!(RuleShared {
                wants_data: Atomic::new(wants_data),
                policy <- new_spinlock_irq!(slots, "openqos_rule_policy"),
                epoch: epoch.clone(),
                prios: prios.clone(),
                stats: RuleStats::new(),
            }),
            GFP_KERNEL_ACCOUNT,
        )?;
        let families: &[Family] = if flags & rule_flags::DUAL_STACK != 0 {
            &[Family::Inet6Dual]
        } else {
            &[Family::Inet, Family::Inet6Only]
        };
        let mut listeners = KVec::with_capacity(families.len(), GFP_KERNEL)?;
        for f in families {
            let fwd = Forward {
                shared: shared.clone(),
            };
            // On failure, the listeners created so far are dropped (closed) here: nothing
            // is left half-created.
            let l = ModuleListener::new(net, *f, port, fwd).map_err(|e| {
                if e == EADDRINUSE {
                    reject(
                        e,
                        c_str!("another socket already listens on the incoming port"),
                        Some(abi::attr::PORT),
                    )
                } else {
                    reject(
                        e,
                        c_str!("could not listen on the incoming port"),
                        Some(abi::attr::PORT),
                    )
                }
            })?;
            listeners.push(l, GFP_KERNEL)?;
        }
        Ok(Self {
            port,
            kind,
            flags,
            policy,
            shared,
            listeners,
        })
    }

    /// Changes the policy, in force at once (a change of this rule alone).
    pub(crate) fn set_policy(&mut self, new: Arc<Policy>) {
        self.shared
            .stage(self.shared.epoch.current(), Some(new.clone()));
        self.policy = new;
    }

    /// Has the listeners look at the connections they held while a replacement switched.
    pub(crate) fn resume(&self) {
        for l in self.listeners.iter() {
            l.resume();
        }
    }

    /// Connections waiting in the module's own queues for this rule.
    pub(crate) fn waiting(&self) -> u64 {
        self.listeners
            .iter()
            .map(|l| u64::from(l.sock().waiting()))
            .sum()
    }
}

/// A rule with more conditions than its type allows.
pub(crate) fn too_many_conds() -> Rejection {
    reject(
        ENOSPC,
        c_str!("too many conditions in this rule (10000 for address rules, 1024 for others)"),
        None,
    )
}

/// Checks that `matcher` fits the rule type `kind`.
pub(crate) fn check_matcher(kind: u8, matcher: &Matcher) -> Result<(), Rejection> {
    match (kind, matcher) {
        (rule_type::ADDRESS, Matcher::Addr(_))
        | (rule_type::PROBABILISTIC, Matcher::Weight(_))
        | (rule_type::CONTENT, Matcher::Content(_)) => Ok(()),
        (rule_type::ADDRESS, _) => Err(reject(
            EINVAL,
            c_str!("an address rule takes addr4+mask4 or addr6+prefix6 conditions"),
            None,
        )),
        (rule_type::CONTENT, _) => Err(reject(
            EINVAL,
            c_str!("a content rule takes string (pattern) conditions"),
            None,
        )),
        _ => Err(reject(
            EINVAL,
            c_str!("a probabilistic rule takes weight conditions"),
            Some(abi::attr::WEIGHT),
        )),
    }
}
