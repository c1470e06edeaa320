// SPDX-License-Identifier: GPL-2.0

//! The classifier: rules, their conditions, and the forwarding decision.
//!
//! A rule owns an incoming port. The module listens there itself ([`ModuleListener`]) and
//! for every established connection picks an outgoing port: the first condition, in the
//! order added, that the connection satisfies, else the rule's default port. The
//! connection is then moved into the accept queue of whoever listens on that port.
//!
//! Configuration is serialized per namespace (a [`NetState`]'s mutex); the hook never
//! takes it. It reads the rule's [`Policy`] in force, an immutable snapshot replaced as a
//! whole on every change (so a connection sees either the old or the new condition list,
//! never a mix). A rule set replacement switches every rule of the namespace at once
//! ([`Epoch`]), so the rules in force always form one set that passed the chain check.

use crate::qos_ffi as shim;
use crate::{
    abi::{self, limits, rule_flags, rule_type},
    addr::{Client, Prefix},
    chain::{self, ChainError},
    content::{Dfa, ScanCache, Slot, Tables, TablesError},
    prob,
    qos_actuators::Group,
    qos_sensor::{self, Counter, Meter, RuleStats, Tracked},
    qos_sock::{
        ChildOutcome, DrainCx, Drained, Family, Forwarder, ListenSock, LockedChild, ModuleListener,
        MoveError, Moved, NetRef, PeekEnd, Peer, QueueHead, Target,
    },
};
use kernel::{
    bindings, c_str,
    prelude::*,
    str::CStr,
    sync::{
        atomic::{Acquire, Atomic, Relaxed, Release},
        global_lock, new_spinlock_irq, rcu, Arc, Mutex, SpinLockIrq,
    },
};

/// A refused configuration change: errno, message for extack, offending attribute.
pub(crate) struct Rejection {
    /// The errno returned to the caller.
    pub(crate) err: Error,
    /// The extack message.
    pub(crate) msg: &'static CStr,
    /// The attribute to point at, if one is to blame.
    pub(crate) attr: Option<u16>,
}

/// Shorthand for a [`Rejection`].
pub(crate) const fn reject(err: Error, msg: &'static CStr, attr: Option<u16>) -> Rejection {
    Rejection { err, msg, attr }
}

impl From<kernel::alloc::AllocError> for Rejection {
    fn from(_: kernel::alloc::AllocError) -> Self {
        ENOMEM.into()
    }
}

impl From<Error> for Rejection {
    fn from(err: Error) -> Self {
        reject(err, c_str!("openqos: out of memory or kernel error"), None)
    }
}

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
    fn of(kind: u8, flags: u32, timeout_ms: Option<u32>) -> Result<Option<Self>, Rejection> {
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
    /// Conditions, tried in order.
    pub(crate) conds: KVec<Arc<Cond>>,
    /// Content rules: their options.
    pub(crate) content: Option<ContentOpts>,
    /// Content rules with at least one condition: the automaton of their strings.
    pub(crate) automaton: Option<Automaton>,
}

impl Policy {
    /// Builds the policy of a rule of type `kind` from its complete condition list,
    /// checking that every condition fits the type and that the list is within the
    /// limits; for a content rule (`content`), with its automaton.
    fn new(
        kind: u8,
        default_port: u16,
        conds: KVec<Arc<Cond>>,
        content: Option<ContentOpts>,
    ) -> Result<Arc<Self>, Rejection> {
        if conds.len() > limits::MAX_CONDS {
            return Err(reject(
                ENOSPC,
                c_str!("too many conditions in this rule (1024)"),
                None,
            ));
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
        Ok(Arc::new(
            Policy {
                default_port,
                conds,
                content,
                automaton,
            },
            GFP_KERNEL,
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
    fn targets(&self) -> impl Iterator<Item = u16> + '_ {
        Iterator::chain(
            core::iter::once(self.default_port),
            self.conds.iter().map(|c| c.out),
        )
    }

    /// A copy of the condition list with room for `extra` more.
    fn try_clone(&self, extra: usize) -> Result<KVec<Arc<Cond>>> {
        let mut conds = KVec::with_capacity(self.conds.len() + extra, GFP_KERNEL)?;
        for c in self.conds.iter() {
            conds.push(c.clone(), GFP_KERNEL)?;
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
    /// The slot in force.
    fn current(&self) -> usize {
        (self.0.load(Acquire) & 1) as usize
    }

    /// The slot a replacement stages into. Only changes under the namespace's mutex.
    fn staging(&self) -> usize {
        self.current() ^ 1
    }

    /// Puts the staged slot in force. Under the namespace's mutex.
    fn flip(&self) {
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
    fn stage(&self, slot: usize, new: Option<Arc<Policy>>) {
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
            match lookup(l.sock(), &rcu, peer, why.port(policy)) {
                Some(target) if wants_data(&target) => l.hand_over_head(cx, head, &target),
                Some(target) => l.move_head(cx, head, &target),
                None => Err(MoveError::NoListener),
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
            match lookup(l.sock(), &rcu, &child.peer(), why.port(&policy)) {
                Some(target) => l.move_child(child, &target, wants_data(&target)),
                None => Err(MoveError::NoListener),
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
    listeners: KVec<Pin<KBox<ModuleListener<Forward>>>>,
}

impl Rule {
    /// Creates the rule on `port` of `net` with `policy` in `slot` of `epoch` (the other
    /// slot holds none): its listeners listen at once, and forward if `slot` is in force.
    fn new(
        net: NetRef,
        epoch: &Arc<Epoch>,
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
    fn set_policy(&mut self, new: Arc<Policy>) {
        self.shared
            .stage(self.shared.epoch.current(), Some(new.clone()));
        self.policy = new;
    }

    /// Has the listeners look at the connections they held while a replacement switched.
    fn resume(&self) {
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

/// The configuration of one network namespace: its rules, meters and groups.
pub(crate) struct NetRules {
    /// Rules in creation order.
    pub(crate) rules: KVec<Rule>,
    /// Meters, sorted by port.
    pub(crate) meters: KVec<Arc<Meter>>,
    /// Socket groups, sorted by number.
    pub(crate) groups: KVec<Arc<Group>>,
    /// Which policy slot of the rules is in force.
    epoch: Arc<Epoch>,
    /// The namespace is being dismantled: everything above was flushed and nothing may
    /// be added again (a rescan that raced with the exit skips it).
    dead: bool,
}

/// The per-namespace store: one per network namespace, created by the pernet `init`
/// (charged to the memory cgroup of whoever creates the namespace) and kept in the
/// namespace's `net_generic` slot until its `exit`.
///
/// Each namespace has its own mutex. Commands of one namespace, its namespace exit (which
/// waits for RCU grace periods while its listeners close) and automaton builds therefore
/// never hold up another namespace; the only lock shared by all is [`REGISTRY`]'s, held
/// for a push, a removal or a copy of the list.
#[pin_data]
pub(crate) struct NetState {
    /// The namespace (alive while the state is registered: see [`net_exit`]).
    net: NetRef,
    #[pin]
    rules: Mutex<NetRules>,
}

// SAFETY: `net` is only an address, dereferenced (by rescans) under `rules`' lock while the
// state is not `dead`, that is before the namespace's exit; the rest is `Send`.
unsafe impl Send for NetState {}
// SAFETY: as above; shared access goes through the mutex.
unsafe impl Sync for NetState {}

impl NetState {
    /// Locks the namespace's configuration.
    pub(crate) fn lock(&self) -> kernel::sync::MutexGuard<'_, NetRules> {
        self.rules.lock()
    }
}

global_lock! {
    // SAFETY: initialized in the module's `init` before anything else uses it.
    pub(crate) unsafe(uninit) static REGISTRY: Mutex<KVec<Arc<NetState>>> = KVec::new();
}

/// The configuration of one namespace, as the functions below take it (a locked
/// [`NetState`] derefs to it).
pub(crate) type Nets = NetRules;

/// The `net_generic` id of the module's per-namespace slot (written by the pernet core at
/// registration).
pub(crate) struct NetId(core::cell::UnsafeCell<core::ffi::c_uint>);

// SAFETY: written once by `register_pernet_subsys` before any reader can run, then only
// read.
unsafe impl Sync for NetId {}

impl NetId {
    /// The address the pernet core writes the id to.
    pub(crate) const fn ptr(&self) -> *mut core::ffi::c_uint {
        self.0.get()
    }
}

/// The id of our slot in every namespace's `net_generic` array.
pub(crate) static NET_ID: NetId = NetId(core::cell::UnsafeCell::new(0));

/// The slot of `net` that holds its state (a pointer from `Arc::into_raw`).
///
/// # Safety
///
/// `net` must be a namespace whose pernet `init` of this module has run.
unsafe fn slot(net: NetRef) -> *mut *const NetState {
    // SAFETY: `net` is live (`NetRef`) and has our slot (caller); the id was set at
    // registration, before any `init`.
    unsafe { shim::oq_net_generic(net.0.as_ptr(), *NET_ID.ptr()) }.cast()
}

/// Pernet `init`: creates the state of a new namespace. Returns 0 or a negative errno.
pub(crate) fn net_init(net: NetRef) -> Result {
    let epoch = Arc::new(Epoch(Atomic::new(0)), GFP_KERNEL_ACCOUNT)?;
    let st = Arc::pin_init(
        pin_init!(NetState {
            net,
            rules <- kernel::new_mutex!(NetRules {
                rules: KVec::new(),
                meters: KVec::new(),
                groups: KVec::new(),
                epoch,
                dead: false,
            }),
        }),
        GFP_KERNEL_ACCOUNT,
    )?;
    REGISTRY.lock().push(st.clone(), GFP_KERNEL_ACCOUNT)?;
    // SAFETY: the pernet core calls `init` with our slot allocated (`size`), zeroed, and
    // not yet read by anyone: `state()` is only called for namespaces past `init`.
    unsafe { *slot(net) = Arc::into_raw(st) };
    Ok(())
}

/// Pernet `exit`: forgets a namespace that is going away. Its groups, meters and rules go
/// (its listeners close) under its own lock; then the state leaves the registry.
pub(crate) fn net_exit(net: NetRef) {
    // SAFETY: `exit` runs only after a successful `init` of ours for `net`.
    let p = unsafe { slot(net) };
    // SAFETY: `p` is our slot; it holds the reference made by `net_init`, which we take
    // back (nothing reads the slot after `exit`: no command can run in a namespace that is
    // being dismantled, and rescans use the registry).
    let raw = unsafe { core::ptr::replace(p, core::ptr::null()) };
    if raw.is_null() {
        return;
    }
    // SAFETY: `raw` came from `Arc::into_raw` in `net_init`.
    let st = unsafe { Arc::from_raw(raw) };
    {
        let mut n = st.lock();
        flush(&mut n);
        n.dead = true;
    }
    let mut reg = REGISTRY.lock();
    if let Some(i) = reg.iter().position(|s| Arc::ptr_eq(s, &st)) {
        let last = reg.len() - 1;
        reg.swap(i, last);
        drop(reg.pop());
    }
    // Statics are never dropped: give the buffer back when the last namespace goes (at
    // the latest when the module unloads), or it would outlive the module.
    if reg.is_empty() {
        *reg = KVec::new();
    }
}

/// The state of `net`, for a command in that namespace.
pub(crate) fn state(net: NetRef) -> Option<Arc<NetState>> {
    // SAFETY: every namespace a command can come from has passed our `init` (we register
    // the pernet operations before the family) and not yet our `exit` (the request's
    // socket holds the namespace).
    let raw = unsafe { *slot(net) };
    if raw.is_null() {
        return None;
    }
    // SAFETY: the slot holds a reference from `Arc::into_raw`, alive until `exit`.
    Some(unsafe { kernel::sync::ArcBorrow::from_raw(raw) }.into())
}

/// Every namespace's state: a copy of the registry, so that its lock is not held while
/// each namespace's own lock is waited for.
pub(crate) fn all_states() -> Result<KVec<Arc<NetState>>> {
    let reg = REGISTRY.lock();
    let mut all = KVec::with_capacity(reg.len(), GFP_KERNEL)?;
    for s in reg.iter() {
        all.push(s.clone(), GFP_KERNEL)?;
    }
    Ok(all)
}

fn find(nets: &Nets, _net: NetRef) -> Option<&NetRules> {
    Some(nets)
}

fn find_mut(nets: &mut Nets, _net: NetRef) -> Option<&mut NetRules> {
    Some(nets)
}

/// The rules of `net`.
fn rules_mut(nets: &mut Nets, _net: NetRef) -> Result<&mut KVec<Rule>, Rejection> {
    if nets.dead {
        return Err(reject(
            ENODEV,
            c_str!("the network namespace is being dismantled"),
            None,
        ));
    }
    Ok(&mut nets.rules)
}

/// The rules of `net`, if any.
pub(crate) fn rules(nets: &Nets, net: NetRef) -> &[Rule] {
    find(nets, net).map_or(&[], |n| &n.rules[..])
}

fn rule_mut<'a>(nets: &'a mut Nets, net: NetRef, port: u16) -> Result<&'a mut Rule, Rejection> {
    find_mut(nets, net)
        .and_then(|n| n.rules.iter_mut().find(|r| r.port == port))
        .ok_or(reject(
            ENOENT,
            c_str!("no rule on this incoming port"),
            Some(abi::attr::PORT),
        ))
}

/// The rules of a namespace as the chain check sees them: incoming port and policy.
type Graph = KVec<(u16, Arc<Policy>)>;

/// The namespace's rules with the policy of `port` replaced by (or completed with)
/// `candidate`.
fn graph_with(rules: &[Rule], port: u16, candidate: &Arc<Policy>) -> Result<Graph, Rejection> {
    let mut g = KVec::with_capacity(rules.len() + 1, GFP_KERNEL)?;
    for r in rules.iter().filter(|r| r.port != port) {
        g.push((r.port, r.policy.clone()), GFP_KERNEL)?;
    }
    g.push((port, candidate.clone()), GFP_KERNEL)?;
    Ok(g)
}

/// Checks that the rules of `graph` form no cycle and no chain deeper than the limit.
/// `attr` is blamed, and the incoming port of the rule at fault is returned with the
/// error.
fn check_chains(graph: &Graph, attr: Option<u16>) -> Result<(), (Rejection, Option<u16>)> {
    let mut ports = KVec::with_capacity(graph.len(), GFP_KERNEL).map_err(nomem)?;
    for (port, _) in graph.iter() {
        ports.push(*port, GFP_KERNEL).map_err(nomem)?;
    }
    let targets = |p: u16| {
        graph
            .iter()
            .find(|(q, _)| *q == p)
            .map(|(_, pol)| pol.targets())
    };
    let mut memo = KVec::from_elem(0u8, ports.len(), GFP_KERNEL).map_err(nomem)?;
    chain::check(&ports, &targets, &mut memo, limits::MAX_CHAIN_DEPTH).map_err(|e| match e {
        ChainError::Cycle(p) => (
            reject(
                ELOOP,
                c_str!("outgoing port leads back to this rule's incoming port"),
                attr,
            ),
            Some(p),
        ),
        ChainError::TooDeep(p) => (too_deep(attr), Some(p)),
        ChainError::TooMany => (too_deep(attr), None),
    })
}

fn too_deep(attr: Option<u16>) -> Rejection {
    reject(
        ELOOP,
        c_str!("chain of rules would be longer than the limit (8)"),
        attr,
    )
}

fn nomem(e: kernel::alloc::AllocError) -> (Rejection, Option<u16>) {
    (e.into(), None)
}

/// Creates a rule listening on `port` in `net`.
pub(crate) fn rule_new(
    nets: &mut Nets,
    net: NetRef,
    port: u16,
    kind: u8,
    default_port: u16,
    flags: u32,
    timeout_ms: Option<u32>,
) -> Result<(), Rejection> {
    let content = ContentOpts::of(kind, flags, timeout_ms)?;
    let existing = rules(nets, net);
    if existing.iter().any(|r| r.port == port) {
        return Err(reject(
            EEXIST,
            c_str!("a rule already owns this incoming port"),
            Some(abi::attr::PORT),
        ));
    }
    if existing.len() >= limits::MAX_RULES {
        return Err(too_many_rules());
    }
    let policy = Policy::new(kind, default_port, KVec::new(), content)?;
    check_chains(
        &graph_with(existing, port, &policy)?,
        Some(abi::attr::DEFAULT_PORT),
    )
    .map_err(|(r, _)| r)?;
    let epoch = nets.epoch.clone();
    let rule = Rule::new(net, &epoch, epoch.current(), port, kind, flags, policy)?;
    rules_mut(nets, net)?.push(rule, GFP_KERNEL)?;
    Ok(())
}

fn too_many_rules() -> Rejection {
    reject(
        ENOSPC,
        c_str!("too many rules in this namespace (256)"),
        None,
    )
}

/// Deletes the rule on `port`; its listeners close (connections still queued there are
/// reset).
pub(crate) fn rule_del(nets: &mut Nets, net: NetRef, port: u16) -> Result<(), Rejection> {
    let n = find_mut(nets, net).ok_or(reject(
        ENOENT,
        c_str!("no rule on this incoming port"),
        Some(abi::attr::PORT),
    ))?;
    let i = n.rules.iter().position(|r| r.port == port).ok_or(reject(
        ENOENT,
        c_str!("no rule on this incoming port"),
        Some(abi::attr::PORT),
    ))?;
    drop(n.rules.remove(i));
    Ok(())
}

/// Checks that `matcher` fits the rule type `kind`.
fn check_matcher(kind: u8, matcher: &Matcher) -> Result<(), Rejection> {
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

fn new_cond(matcher: Matcher, out: u16) -> Result<Arc<Cond>, Rejection> {
    Ok(Arc::new(
        Cond {
            matcher,
            out,
            hits: Counter::new(),
        },
        GFP_KERNEL,
    )?)
}

/// Adds (`index` = `None`) or replaces (1-based `index`) a condition of the rule on
/// `port`. The rule's new policy is built aside and swapped in whole: a connection is
/// classified by the old or by the new condition list, never by a mix.
pub(crate) fn cond_set(
    nets: &mut Nets,
    net: NetRef,
    port: u16,
    index: Option<u32>,
    matcher: Matcher,
    out: u16,
) -> Result<(), Rejection> {
    let rule = rule_mut(nets, net, port)?;
    let kind = rule.kind;
    check_matcher(kind, &matcher)?;
    let old = rule.policy.clone();
    let slot = index.map(|i| cond_slot(&old, i)).transpose()?;
    // A replaced condition starts a new counter: it is a different condition.
    let cond = new_cond(matcher, out)?;
    let mut conds = old.try_clone(1)?;
    match slot {
        Some(i) => conds[i] = cond,
        None => conds.push(cond, GFP_KERNEL)?,
    }
    let new = Policy::new(kind, old.default_port, conds, old.content)?;
    check_chains(
        &graph_with(rules(nets, net), port, &new)?,
        Some(abi::attr::OUT_PORT),
    )
    .map_err(|(r, _)| r)?;
    rule_mut(nets, net, port)?.set_policy(new);
    Ok(())
}

/// The 0-based slot of 1-based condition `index`.
fn cond_slot(policy: &Policy, index: u32) -> Result<usize, Rejection> {
    (index as usize)
        .checked_sub(1)
        .filter(|i| *i < policy.conds.len())
        .ok_or(reject(
            ENOENT,
            c_str!("the rule has no condition at this index"),
            Some(abi::attr::COND_INDEX),
        ))
}

/// Deletes the condition at 1-based `index` of the rule on `port`.
pub(crate) fn cond_del(
    nets: &mut Nets,
    net: NetRef,
    port: u16,
    index: u32,
) -> Result<(), Rejection> {
    let rule = rule_mut(nets, net, port)?;
    let old = rule.policy.clone();
    let i = cond_slot(&old, index)?;
    let mut conds = old.try_clone(0)?;
    drop(conds.remove(i));
    let new = Policy::new(rule.kind, old.default_port, conds, old.content)?;
    rule.set_policy(new);
    Ok(())
}

/// Deletes the groups, meters and rules of a namespace that is going away.
fn flush(n: &mut NetRules) {
    shut_down_sensors(n, drop);
    drop(core::mem::take(&mut n.rules));
}

/// Shuts a namespace's groups and then its meters down and takes them out; the meters'
/// records go to `record`.
fn shut_down_sensors(n: &mut NetRules, mut record: impl FnMut(Arc<Tracked>)) {
    for g in core::mem::take(&mut n.groups) {
        group_shutdown(&g);
    }
    for m in core::mem::take(&mut n.meters) {
        for rec in m.shutdown() {
            record(rec);
        }
    }
}

/// Shuts `g` down and takes its ports out of it.
fn group_shutdown(g: &Group) {
    for m in g.shutdown() {
        m.leave(g);
    }
}

/// Deletes every rule of `net` (`FLUSH`); its meters stay.
pub(crate) fn flush_rules(nets: &mut Nets, _net: NetRef) {
    drop(core::mem::take(&mut nets.rules));
}

fn too_many_meters() -> Rejection {
    reject(
        ENOSPC,
        c_str!("too many metered ports in this namespace (1024)"),
        Some(abi::attr::PORT),
    )
}

/// Where the meter of `port` is in `meters` (sorted), or where it would go.
fn meter_slot(meters: &[Arc<Meter>], port: u16) -> Result<usize, usize> {
    meters.binary_search_by_key(&port, |m| m.port)
}

/// Adds a meter of `port` to `net` with `flags`, or adds `flags` to an existing one.
/// Returns whether the meter existed.
fn meter_add(nets: &mut Nets, net: NetRef, port: u16, flags: u32) -> Result<bool, Rejection> {
    rules_mut(nets, net)?;
    let Some(n) = find_mut(nets, net) else {
        return Err(ENOMEM.into());
    };
    let at = match meter_slot(&n.meters, port) {
        Ok(i) => {
            let existed = n.meters[i].flags() & flags == flags;
            n.meters[i].add_flags(flags);
            return Ok(existed);
        }
        Err(at) => at,
    };
    if n.meters.len() >= limits::MAX_METERS {
        return Err(too_many_meters());
    }
    let m = Meter::new(port, flags).map_err(|e| {
        if e == EOPNOTSUPP {
            reject(
                e,
                c_str!("meters need a kernel with CONFIG_TASKS_RCU"),
                None,
            )
        } else {
            e.into()
        }
    })?;
    n.meters.push(m.clone(), GFP_KERNEL)?;
    n.meters[at..].rotate_right(1);
    m.rescan(net);
    qos_sensor::schedule_rescan();
    Ok(false)
}

/// Meters every outgoing port of `net`'s rules that is not a rule's incoming port. A
/// port the namespace cannot meter (limit, memory) stays unmetered: forwarding does not
/// depend on it.
///
/// O(E log E) for E condition edges: the rules' incoming ports are sorted and searched by
/// bisection, and the candidate ports are sorted and deduplicated once.
pub(crate) fn sync_meters(nets: &mut Nets, net: NetRef) {
    let Some(n) = find(nets, net) else {
        return;
    };
    let Ok(mut incoming) = KVec::with_capacity(n.rules.len(), GFP_KERNEL) else {
        return;
    };
    for r in n.rules.iter() {
        // Cannot fail: the capacity is the number of rules.
        let _ = incoming.push_within_capacity(r.port);
    }
    incoming.sort_unstable();
    let mut want = KVec::<u16>::new();
    'rules: for r in n.rules.iter() {
        for port in r.policy.targets() {
            let known = meter_slot(&n.meters, port)
                .is_ok_and(|i| n.meters[i].flags() & qos_sensor::AUTO != 0);
            if known || incoming.binary_search(&port).is_ok() {
                continue;
            }
            if want.push(port, GFP_KERNEL).is_err() {
                break 'rules;
            }
        }
    }
    want.sort_unstable();
    for (i, &port) in want.iter().enumerate() {
        // Sorted: a port already handled is the one just before.
        if i > 0 && want[i - 1] == port {
            continue;
        }
        let _ = meter_add(nets, net, port, qos_sensor::AUTO);
    }
}

/// Meters `port` on request (`METER_NEW`).
pub(crate) fn meter_new(nets: &mut Nets, net: NetRef, port: u16) -> Result<(), Rejection> {
    if rules(nets, net).iter().any(|r| r.port == port) {
        return Err(reject(
            EINVAL,
            c_str!("a rule owns this port: its counters are the rule's statistics"),
            Some(abi::attr::PORT),
        ));
    }
    match meter_add(nets, net, port, abi::meter_flags::REQUESTED)? {
        true => Err(reject(
            EEXIST,
            c_str!("this port is already metered"),
            Some(abi::attr::PORT),
        )),
        false => Ok(()),
    }
}

/// Stops metering `port` (`METER_DEL`).
pub(crate) fn meter_del(nets: &mut Nets, net: NetRef, port: u16) -> Result<(), Rejection> {
    let none = || {
        reject(
            ENOENT,
            c_str!("this port is not metered"),
            Some(abi::attr::PORT),
        )
    };
    let n = find_mut(nets, net).ok_or_else(none)?;
    let i = meter_slot(&n.meters, port).map_err(|_| none())?;
    if n.meters[i].grouped() {
        return Err(reject(
            EBUSY,
            c_str!("this port is in a socket group: detach it first"),
            Some(abi::attr::PORT),
        ));
    }
    let m = n.meters.remove(i).map_err(|_| none())?;
    drop(m.shutdown());
    Ok(())
}

/// The meters of `net`, sorted by port.
pub(crate) fn meters(nets: &Nets, net: NetRef) -> &[Arc<Meter>] {
    find(nets, net).map_or(&[], |n| &n.meters[..])
}

/// Wraps the listeners that appeared on metered ports (the sensors' work item), one
/// namespace at a time under its own lock. Returns whether any meter exists.
pub(crate) fn rescan_meters() -> bool {
    let Ok(all) = all_states() else {
        // Out of memory: try again at the next period.
        return true;
    };
    let mut any = false;
    for st in all.iter() {
        let n = st.lock();
        // A namespace past its exit is flushed and its `net` may be gone: skip it.
        if n.dead {
            continue;
        }
        for m in n.meters.iter() {
            m.rescan(st.net);
            any = true;
        }
    }
    any
}

/// Shuts every group and meter of every namespace down (module unload, after the family
/// is gone) and returns the meters' records.
pub(crate) fn shutdown_meters() -> KVec<Arc<Tracked>> {
    let mut all = KVec::new();
    // Module exit: no command runs any more, and namespaces created or dismantled
    // meanwhile only take the registry's lock, briefly, so holding it here is fine.
    let reg = REGISTRY.lock();
    for st in reg.iter() {
        // Without memory, a record goes now: its socket just is not kicked again if a
        // task re-enters a wrapper through a stale pointer.
        shut_down_sensors(&mut st.lock(), |rec| {
            let _ = all.push(rec, GFP_KERNEL);
        });
    }
    all
}

fn no_group() -> Rejection {
    reject(
        ENOENT,
        c_str!("no such socket group"),
        Some(abi::attr::GROUP_ID),
    )
}

/// The group `id` of `net`.
fn group_find(nets: &Nets, net: NetRef, id: u32) -> Result<Arc<Group>, Rejection> {
    find(nets, net)
        .and_then(|n| n.groups.iter().find(|g| g.id == id))
        .cloned()
        .ok_or_else(no_group)
}

/// Creates a socket group (`GROUP_NEW`).
pub(crate) fn group_new(
    nets: &mut Nets,
    net: NetRef,
    id: u32,
    kind: u8,
    rate: Option<u64>,
    burst: Option<u64>,
    flags: u32,
) -> Result<(), Rejection> {
    if group_find(nets, net, id).is_ok() {
        return Err(reject(
            EEXIST,
            c_str!("this socket group exists"),
            Some(abi::attr::GROUP_ID),
        ));
    }
    if find(nets, net).is_some_and(|n| n.groups.len() >= limits::MAX_GROUPS) {
        return Err(reject(
            ENOSPC,
            c_str!("too many socket groups in this namespace (64)"),
            Some(abi::attr::GROUP_ID),
        ));
    }
    let g = Group::new(id, kind, rate, burst, flags)?;
    rules_mut(nets, net)?;
    let n = find_mut(nets, net).ok_or(ENOMEM)?;
    let at = n.groups.partition_point(|g| g.id < id);
    n.groups.push(g.clone(), GFP_KERNEL)?;
    n.groups[at..].rotate_right(1);
    g.publish();
    Ok(())
}

/// Deletes a socket group (`GROUP_DEL`): its ports leave it and every caller it held
/// back resumes.
pub(crate) fn group_del(nets: &mut Nets, net: NetRef, id: u32) -> Result<(), Rejection> {
    let n = find_mut(nets, net).ok_or_else(no_group)?;
    let i = n
        .groups
        .iter()
        .position(|g| g.id == id)
        .ok_or_else(no_group)?;
    let g = n.groups.remove(i).map_err(|_| no_group())?;
    group_shutdown(&g);
    Ok(())
}

/// A `GROUP_SET` request: what to change (`None`: unchanged).
pub(crate) struct GroupChange {
    /// Connections or bytes per second.
    pub(crate) rate: Option<u64>,
    /// Bucket size.
    pub(crate) burst: Option<u64>,
    /// Bits of [`abi::group_flags`].
    pub(crate) flags: Option<u32>,
    /// A member port and its new weight (ratio groups).
    pub(crate) weight: Option<(u16, u32)>,
    /// The rate and burst hold this long (milliseconds), then the group goes back.
    pub(crate) lease_ms: Option<u32>,
}

/// Changes a group live (`GROUP_SET`).
pub(crate) fn group_set(
    nets: &mut Nets,
    net: NetRef,
    id: u32,
    change: GroupChange,
) -> Result<(), Rejection> {
    let GroupChange {
        rate,
        burst,
        flags,
        weight,
        lease_ms,
    } = change;
    let g = group_find(nets, net, id)?;
    // Weights are for ratio groups, the rest for the others: refused together before
    // anything changes (a weight set and then a refused rate would be half a change).
    let quota = rate.is_some() || burst.is_some() || lease_ms.is_some();
    if weight.is_some() && quota {
        return Err(reject(
            EINVAL,
            c_str!("a member's weight and a rate, burst or lease are for different group types"),
            Some(abi::attr::WEIGHT),
        ));
    }
    if let Some((port, w)) = weight {
        g.set_weight(port, w)?;
    }
    if quota || flags.is_some() {
        g.set(rate, burst, flags, lease_ms)?;
    }
    Ok(())
}

/// Attaches `port` to group `id` (`GROUP_PORT_ADD`), metering it if needed; `flags`:
/// bits of [`abi::group_flags`] for this member ([`abi::group_flags::FTP`]: an FTP
/// control port).
pub(crate) fn group_port_add(
    nets: &mut Nets,
    net: NetRef,
    id: u32,
    port: u16,
    weight: Option<u32>,
    flags: u32,
) -> Result<(), Rejection> {
    let ftp = flags & abi::group_flags::FTP != 0;
    let g = group_find(nets, net, id)?;
    if weight.is_some() && g.kind != abi::group_type::RATIO {
        return Err(reject(
            EINVAL,
            c_str!("only accept-ratio groups have weights"),
            Some(abi::attr::WEIGHT),
        ));
    }
    if rules(nets, net).iter().any(|r| r.port == port) {
        return Err(reject(
            EINVAL,
            c_str!("a rule owns this port: group the ports its connections go to"),
            Some(abi::attr::PORT),
        ));
    }
    let ports = g.ports();
    if ports.contains(&port) {
        return Err(reject(
            EEXIST,
            c_str!("this port is in the group already"),
            Some(abi::attr::PORT),
        ));
    }
    if ports.len() >= limits::MAX_GROUP_PORTS {
        return Err(reject(
            ENOSPC,
            c_str!("too many ports in this group (16)"),
            Some(abi::attr::PORT),
        ));
    }
    let existing = find(nets, net).and_then(|n| {
        meter_slot(&n.meters, port)
            .ok()
            .map(|i| n.meters[i].clone())
    });
    if existing
        .as_ref()
        .is_some_and(|m| m.group(g.is_output()).is_some())
    {
        return Err(reject(
            EBUSY,
            c_str!("this port is in another group of this kind"),
            Some(abi::attr::PORT),
        ));
    }
    meter_add(nets, net, port, abi::meter_flags::GROUPED)?;
    let n = find(nets, net).ok_or(ENOMEM)?;
    let m = meter_slot(&n.meters, port)
        .map(|i| n.meters[i].clone())
        .map_err(|_| ENOMEM)?;
    // Nothing is left half-done: a meter made for this port goes again on failure.
    let undo = |nets: &mut Nets, m: &Meter| {
        m.leave(&g);
        if existing.is_none() {
            let _ = meter_del(nets, net, port);
        }
    };
    if !m.join(&g, ftp) {
        undo(nets, &m);
        return Err(reject(
            EBUSY,
            c_str!("this port is in another group of this kind"),
            Some(abi::attr::PORT),
        ));
    }
    if let Err(e) = g.add_port(m.clone(), weight.unwrap_or(1), ftp) {
        undo(nets, &m);
        return Err(e);
    }
    Ok(())
}

/// Detaches `port` from group `id` (`GROUP_PORT_DEL`); its meter stays.
pub(crate) fn group_port_del(
    nets: &mut Nets,
    net: NetRef,
    id: u32,
    port: u16,
) -> Result<(), Rejection> {
    let g = group_find(nets, net, id)?;
    let m = g.del_port(port).ok_or(reject(
        ENOENT,
        c_str!("this port is not in the group"),
        Some(abi::attr::PORT),
    ))?;
    m.leave(&g);
    Ok(())
}

/// The groups of `net`, sorted by number.
pub(crate) fn groups(nets: &Nets, net: NetRef) -> &[Arc<Group>] {
    find(nets, net).map_or(&[], |n| &n.groups[..])
}

/// One rule of a rule set (`RULESET_REPLACE`), as parsed from the request.
pub(crate) struct RuleSpec {
    /// Incoming port.
    pub(crate) port: u16,
    /// One of [`rule_type`].
    pub(crate) kind: u8,
    /// Default outgoing port.
    pub(crate) default_port: u16,
    /// Bits of [`rule_flags`].
    pub(crate) flags: u32,
    /// Content rules: the data timeout, if given.
    pub(crate) timeout_ms: Option<u32>,
    /// Conditions in priority order: matcher and outgoing port.
    pub(crate) conds: KVec<(Matcher, u16)>,
}

/// A rule of a rule set, validated and built aside.
struct Staged {
    port: u16,
    kind: u8,
    flags: u32,
    policy: Arc<Policy>,
    /// The rule on this port today, if any: it keeps its listeners and counters.
    existing: bool,
}

/// Replaces every rule of `net` with `set`, atomically: everything that can fail
/// (validation, policies and automata, the listeners of new incoming ports) is done
/// before the first visible change, and what follows cannot fail. Rules on ports that
/// stay keep their listeners, so no connection is refused or lost, and their counters;
/// a condition identical to the one at the same position keeps its hit counter. The
/// hooks switch from the old set to the new one at one instant ([`Epoch`]): no connection
/// is ever forwarded by a mix of old and new rules, which could form a chain deeper than
/// the limit, or a cycle, that neither set has. With `check_only`, nothing changes (and
/// new ports are not bound).
///
/// `at` names the `RULE` attribute each error blames: the rule's position in the set.
pub(crate) fn replace(
    nets: &mut Nets,
    net: NetRef,
    set: KVec<RuleSpec>,
    check_only: bool,
    at: &mut usize,
) -> Result<(), Rejection> {
    if set.len() > limits::MAX_RULES {
        return Err(too_many_rules());
    }
    let existing = rules(nets, net);
    let mut staged = KVec::with_capacity(set.len(), GFP_KERNEL)?;
    for (i, spec) in set.into_iter().enumerate() {
        *at = i;
        if staged.iter().any(|s: &Staged| s.port == spec.port) {
            return Err(reject(
                EINVAL,
                c_str!("two rules of the set own the same incoming port"),
                Some(abi::attr::PORT),
            ));
        }
        let content = ContentOpts::of(spec.kind, spec.flags, spec.timeout_ms)?;
        let prev = existing.iter().find(|r| r.port == spec.port);
        if prev.is_some_and(|r| (r.flags ^ spec.flags) & rule_flags::DUAL_STACK != 0) {
            // Its listeners would have to be closed before the new ones can bind.
            return Err(reject(
                EBUSY,
                c_str!("a rule set cannot switch a rule between dual-stack and separate listeners; delete it first"),
                Some(abi::attr::RULE_FLAGS),
            ));
        }
        let prev_policy = prev.map(|r| r.policy.clone());
        let mut conds = KVec::with_capacity(spec.conds.len(), GFP_KERNEL)?;
        for (j, (matcher, out)) in spec.conds.into_iter().enumerate() {
            let same = prev_policy
                .as_ref()
                .and_then(|p| p.conds.get(j))
                .filter(|c| c.out == out && c.matcher == matcher);
            let cond = match same {
                Some(c) => c.clone(),
                None => new_cond(matcher, out)?,
            };
            conds.push(cond, GFP_KERNEL)?;
        }
        let policy = Policy::new(spec.kind, spec.default_port, conds, content)?;
        staged.push(
            Staged {
                port: spec.port,
                kind: spec.kind,
                flags: spec.flags,
                policy,
                existing: prev.is_some(),
            },
            GFP_KERNEL,
        )?;
    }
    *at = usize::MAX;
    let mut graph = KVec::with_capacity(staged.len(), GFP_KERNEL)?;
    for s in staged.iter() {
        graph.push((s.port, s.policy.clone()), GFP_KERNEL)?;
    }
    check_chains(&graph, None).map_err(|(r, port)| {
        // Blame the rule the chain check names.
        if let Some(i) = port.and_then(|p| staged.iter().position(|s| s.port == p)) {
            *at = i;
        }
        r
    })?;
    if check_only {
        return Ok(());
    }
    // The listeners of new incoming ports, with their policy staged: they hold what they
    // receive until the switch. If one cannot bind, those created so far close again, and
    // nothing else has changed.
    let epoch = nets.epoch.clone();
    let next = epoch.staging();
    let mut fresh = KVec::with_capacity(staged.len(), GFP_KERNEL)?;
    for (i, s) in staged.iter().enumerate() {
        *at = i;
        let rule = match s.existing {
            true => None,
            false => Some(Rule::new(
                net,
                &epoch,
                next,
                s.port,
                s.kind,
                s.flags,
                s.policy.clone(),
            )?),
        };
        fresh.push(rule, GFP_KERNEL)?;
    }
    *at = usize::MAX;
    let mut new_rules = KVec::with_capacity(staged.len(), GFP_KERNEL)?;
    let rules = rules_mut(nets, net)?;

    // Commit: nothing below fails. Every rule of today gets its policy in the new set
    // staged (none if it goes), then all switch at once.
    for r in rules.iter() {
        let new = staged
            .iter()
            .find(|s| s.port == r.port)
            .map(|s| s.policy.clone());
        r.shared.stage(next, new);
    }
    epoch.flip();
    for r in rules.iter() {
        r.shared.stage(next ^ 1, None);
    }
    for (s, fresh) in staged.into_iter().zip(fresh) {
        let rule = match fresh {
            Some(r) => {
                // It held what came before the switch.
                r.resume();
                Some(r)
            }
            None => rules.iter_mut().find(|r| r.port == s.port).map(|r| Rule {
                port: r.port,
                kind: s.kind,
                flags: s.flags,
                policy: s.policy,
                shared: r.shared.clone(),
                listeners: core::mem::take(&mut r.listeners),
            }),
        };
        if let Some(r) = rule {
            // Cannot fail: the capacity was reserved above.
            let _ = new_rules.push_within_capacity(r);
        }
    }
    // The rules left behind (their listeners were taken, or they are not in the set)
    // go: the listeners of the latter close, resetting connections still queued there
    // (since the switch they held them).
    drop(core::mem::replace(rules, new_rules));
    sync_meters(nets, net);
    if find(nets, net).is_none_or(|n| n.rules.is_empty()) {
        flush_rules(nets, net);
    }
    Ok(())
}
