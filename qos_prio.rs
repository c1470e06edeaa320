// SPDX-License-Identifier: GPL-2.0

//! Prioritized accept queues: one unmodified server, several classes of clients.
//!
//! A prioritized port ([`PrioPort`], `PRIO_SET`) is a server's listening port whose
//! connections, when a rule sends them there with a priority class (`PRIO`,
//! `DEFAULT_PRIO`), do not go straight into the server's accept queue. They wait in the
//! module, one queue per class, and are released into the server's queue in strict
//! priority order (FIFO within a class) only while it holds fewer than `depth`
//! connections: as the server accepts one (its port is metered, and the meter tells the
//! queue through [`Feeder`]), the next goes in. So the server's own queue stays short, and
//! a high-priority arrival never waits behind a queue full of low-priority ones, which is
//! what sank the 2001 "prioritized accept" patch.
//!
//! The queues are the accept queues of hidden listeners of the module (*parks*, one per
//! class and address family: [`ListenSock::hidden`]), so a held connection is always in
//! some listener's accept queue, where the kernel's own code owns it: a park that closes
//! resets what it still holds, as any listener does. Connections move in and out with the
//! same checked move as every forwarded connection. Refusing one (push-out, deadline,
//! cap) is a move into a refusal listener ([`Refuse`]) whose work item accepts and resets
//! it, so every decision is taken, and counted, at once in any context, and the reset
//! follows in process context.
//!
//! Layering: above the socket core, the sensors (the [`Feeder`] trait, counters), the
//! timer and the error leaf; below the classifier, which admits connections here, and the
//! store, which creates and deletes prioritized ports.

use crate::{
    abi::{hist, limits, prio_flags, prio_stat},
    qos_error::{reject, Rejection},
    qos_sensor::{now_ns, Counter, Feeder},
    qos_sock::{
        DrainCx, Drained, Family, Forwarder, ListenRef, ListenSock, ModuleListener, MoveError,
        NetRef, Parked, Peer,
    },
    qos_work::{impl_has_timer, new_timer, Timer, TimerItem},
};
use kernel::{
    c_str,
    prelude::*,
    sync::{
        atomic::{Atomic, Full, Relaxed},
        new_spinlock_irq, rcu, Arc, ArcBorrow, SpinLockIrq,
    },
};

/// Classes of one port at most (array sizes).
const CLASSES: usize = limits::MAX_PRIO_CLASSES as usize;

/// Pumps one call of [`PrioCore::pump`] makes at most before it hands the rest to the
/// timer (each moves at most `HOOK_BUDGET` connections).
const PUMP_ROUNDS: u32 = 4;

/// While connections are held, the queue looks at the server at least this often, in
/// case an accept went unseen (a server that started listening since the meter last
/// looked).
const RECHECK_MS: u32 = 200;

/// The settings of a prioritized port that can change live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    /// Most connections held, all classes together.
    pub(crate) cap: u32,
    /// Most connections released and not yet accepted.
    pub(crate) depth: u32,
    /// Bits of [`prio_flags`].
    pub(crate) flags: u32,
    /// Relative deadline of each class in milliseconds (0: none).
    pub(crate) deadline_ms: [u32; CLASSES],
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            cap: limits::PRIO_CAP,
            depth: limits::PRIO_DEPTH,
            flags: 0,
            deadline_ms: [0; CLASSES],
        }
    }
}

/// The counters of one class.
pub(crate) struct ClassStats {
    admitted: Counter,
    released: Counter,
    pushed_out: Counter,
    expired: Counter,
    refused: Counter,
    lost: Counter,
    delay_ns: Counter,
    hist: [Counter; hist::BUCKETS],
}

impl ClassStats {
    const fn new() -> Self {
        Self {
            admitted: Counter::new(),
            released: Counter::new(),
            pushed_out: Counter::new(),
            expired: Counter::new(),
            refused: Counter::new(),
            lost: Counter::new(),
            delay_ns: Counter::new(),
            hist: [const { Counter::new() }; hist::BUCKETS],
        }
    }
}

/// A snapshot of one class for `PRIO_GET`.
pub(crate) struct ClassReading {
    /// The class's deadline (0: none).
    pub(crate) deadline_ms: u32,
    /// `(attribute, value)` for every [`prio_stat`] attribute.
    pub(crate) stats: [(u16, u64); prio_stat::MAX as usize],
    /// Delays from the handshake to the release.
    pub(crate) hist: [u64; hist::BUCKETS],
}

/// Address family index of a park: 0 for IPv4 connections, 1 for IPv6 ones (v4-mapped
/// included).
fn fam(peer: &Peer) -> usize {
    usize::from(!peer.is_v4())
}

/// The queue discipline of a prioritized port, shared by the classifier (which admits
/// connections), the port's meter (which reports accepts), the timer and the store.
///
/// # Invariants
///
/// Lives in an [`Arc`] ([`PrioPort::new`]). Its timer is only queued under the lock of
/// `gone` while it holds `false`; [`PrioCore::close`] sets it and then cancels the timer,
/// so after a close no run of the module's code is left queued.
#[pin_data]
pub(crate) struct PrioCore {
    /// The server's port.
    pub(crate) port: u16,
    /// Number of classes.
    pub(crate) classes: u8,
    #[pin]
    settings: SpinLockIrq<Settings>,
    /// Park of class `c` and family `f` at `2 * c + f`.
    parks: KVec<ListenRef>,
    /// Refusal listener of each family.
    rejects: KVec<ListenRef>,
    stats: [ClassStats; CLASSES],
    /// A context is pumping; others leave a note in `pending`.
    pumping: Atomic<bool>,
    pending: Atomic<bool>,
    /// Closing: release everything the server's queue takes, whatever the depth.
    closing: Atomic<bool>,
    /// When the server last accepted a connection from the port ([`now_ns`]), and the
    /// moving average (1/8) of the interval between its accepts.
    last_accept: Atomic<u64>,
    interval_ns: Atomic<u64>,
    /// Closed: the timer is not armed again.
    #[pin]
    gone: SpinLockIrq<bool>,
    #[pin]
    work: Timer<PrioCore>,
}

impl_has_timer!(impl HasTimer for PrioCore { self.work });

impl TimerItem for PrioCore {
    /// A queued run owns a reference: the queue cannot go while its timer is queued.
    type Ref = Arc<PrioCore>;

    fn run(this: Arc<PrioCore>) {
        if *this.gone.lock() {
            return;
        }
        this.pending.xchg(true, Full);
        this.pump();
    }
}

impl Feeder for PrioCore {
    fn accepted(&self) {
        let now = now_ns();
        let prev = self.last_accept.xchg(now, Relaxed);
        if prev != 0 && now > prev {
            let dt = now - prev;
            let avg = self.interval_ns.load(Relaxed);
            // A racy update loses at most one sample of an average.
            let next = if avg == 0 { dt } else { avg - avg / 8 + dt / 8 };
            self.interval_ns.store(next, Relaxed);
        }
        self.pending.xchg(true, Full);
        self.pump();
    }
}

/// What [`PrioCore::admit`] decided about an arrival.
pub(crate) enum Admit<'a> {
    /// Nothing is held: if the server's queue holds fewer than this many connections,
    /// move it there at once (then call [`PrioCore::passed`]), else into the park, as
    /// for `Park`.
    Direct(u32, &'a ListenRef, u8),
    /// Move it into this park (then call [`PrioCore::entered`]).
    Park(&'a ListenRef, u8),
    /// Refuse it (counted).
    Refuse,
}

impl PrioCore {
    /// A new reference.
    fn arc(&self) -> Arc<Self> {
        // SAFETY: every `PrioCore` lives in an `Arc` (type invariant), which `self` keeps
        // alive.
        unsafe { ArcBorrow::from_raw(self) }.into()
    }

    /// The settings in force.
    pub(crate) fn settings(&self) -> Settings {
        *self.settings.lock()
    }

    /// Changes the settings; the next pump applies them (a smaller cap pushes out at
    /// once, a new deadline expires at once).
    pub(crate) fn set(&self, s: Settings) {
        *self.settings.lock() = s;
        self.pending.xchg(true, Full);
        self.pump();
    }

    fn park(&self, class: usize, f: usize) -> &ListenRef {
        &self.parks[2 * class + f]
    }

    fn class_waiting(&self, class: usize) -> u32 {
        self.park(class, 0).waiting() + self.park(class, 1).waiting()
    }

    /// Connections held, all classes.
    pub(crate) fn held(&self) -> u32 {
        self.parks.iter().map(|p| p.waiting()).sum()
    }

    /// Decides about an arrival of class `class` (clamped to the lowest class) with the
    /// addresses `peer`. `count`: count a refusal (the caller's last word on it: a
    /// refusal in softirq is decided again in process context).
    pub(crate) fn admit(&self, class: u8, peer: &Peer, count: bool) -> Admit<'_> {
        let c = usize::from(class.min(self.classes - 1));
        let s = self.settings();
        let held = self.held();
        let refuse = if held >= s.cap {
            // Room only if a lower class has a connection to push out.
            !(c + 1..usize::from(self.classes)).any(|d| self.class_waiting(d) > 0)
        } else {
            false
        };
        let dl = s.deadline_ms[c];
        let late = !refuse && s.flags & prio_flags::EARLY_REFUSE != 0 && dl > 0 && {
            let ahead: u64 = (0..=c).map(|d| u64::from(self.class_waiting(d))).sum();
            let interval = self.interval_ns.load(Relaxed);
            interval > 0 && (ahead + 1).saturating_mul(interval) > u64::from(dl) * 1_000_000
        };
        if refuse || late {
            if count {
                self.stats[c].refused.inc();
            }
            return Admit::Refuse;
        }
        let park = self.park(c, fam(peer));
        // The fast path: with nothing held, a connection the pump would release at once
        // goes to the server without passing through its park.
        if held == 0 {
            return Admit::Direct(s.depth, park, c as u8);
        }
        Admit::Park(park, c as u8)
    }

    /// A connection of class `class`, `age_ms` old, went straight to the server
    /// ([`Admit::Direct`]): count it as admitted and released.
    pub(crate) fn passed(&self, class: u8, age_ms: u32) {
        let st = &self.stats[usize::from(class)];
        st.admitted.inc();
        self.count_release(st, age_ms);
    }

    fn count_release(&self, st: &ClassStats, age_ms: u32) {
        let ns = u64::from(age_ms) * 1_000_000;
        st.released.inc();
        st.delay_ns.add(ns);
        st.hist[hist::bucket(ns / 1000)].inc();
    }

    /// A connection of class `class` entered its park: count it and release what the
    /// server can take.
    pub(crate) fn entered(&self, class: u8) {
        self.stats[usize::from(class)].admitted.inc();
        self.pending.xchg(true, Full);
        self.pump();
    }

    /// Runs the queue discipline, serializing callers: whoever finds it busy leaves a
    /// note (`pending`) that the running pump picks up before it lets go (the
    /// store-buffering pattern of `ModuleListener::run`, with fully ordered exchanges on
    /// both sides). The caller sets `pending` first. Any context: it only moves
    /// connections and arms the timer.
    fn pump(&self) {
        let mut rounds = 0;
        loop {
            if self.pumping.cmpxchg(false, true, Full).is_err() {
                return;
            }
            let mut rest = false;
            let mut recheck = None;
            while self.pending.xchg(false, Full) {
                if rounds >= PUMP_ROUNDS {
                    self.pending.xchg(true, Full);
                    rest = true;
                    break;
                }
                recheck = self.pump_once();
                rounds += 1;
            }
            self.pumping.xchg(false, Full);
            if rest {
                self.arm(0);
                return;
            }
            if let Some(ms) = recheck {
                self.arm(ms);
            }
            if !self.pending.load(Relaxed) {
                return;
            }
        }
    }

    /// Has the timer run in `ms` milliseconds, or sooner if it is queued for sooner.
    fn arm(&self, ms: u32) {
        let gone = self.gone.lock();
        if !*gone {
            // INVARIANT: queued under the lock of `gone`, which is false.
            Timer::<Self>::at(self.arc(), ms);
        }
    }

    /// Moves `c` out of `park` (family `f`) into the refusal listener: its client gets a
    /// reset from the refusal listener's work item.
    fn refuse(&self, park: &ListenRef, c: &Parked, f: usize) -> Result<(), MoveError> {
        park.move_to(c, &self.rejects[f].target()).map(|_| ())
    }

    /// One pass of the discipline, at most `HOOK_BUDGET` moves: expire, push out past the
    /// cap, release. Returns when the timer should look again, if connections are held.
    fn pump_once(&self) -> Option<u32> {
        let s = self.settings();
        let closing = self.closing.load(Relaxed);
        let classes = usize::from(self.classes);
        let mut budget = limits::HOOK_BUDGET;
        let mut due = RECHECK_MS;
        // Deadlines: the oldest of a class is the first to pass it.
        for c in 0..classes {
            let dl = s.deadline_ms[c];
            if dl == 0 || closing {
                continue;
            }
            for f in 0..2 {
                let park = self.park(c, f);
                while budget > 0 {
                    let Some(h) = park.peek(false) else { break };
                    let age = h.peer.age_ms();
                    if age < dl {
                        due = due.min(dl - age);
                        break;
                    }
                    budget -= 1;
                    match self.refuse(park, &h, f) {
                        Ok(()) => self.stats[c].expired.inc(),
                        Err(MoveError::Race) => {}
                        Err(_) => break,
                    }
                }
            }
        }
        // The cap: push out the newest connection of the lowest class. An arrival was
        // only admitted if one of a lower class was there, or the queue had room (two
        // arrivals at once may both find the last place: the later is pushed out here).
        while budget > 0 && !closing && self.held() > s.cap {
            let Some(d) = (0..classes).rev().find(|&d| self.class_waiting(d) > 0) else {
                break;
            };
            let newest = (0..2)
                .filter_map(|f| self.park(d, f).peek(true).map(|t| (f, t)))
                .min_by_key(|(_, t)| t.peer.age_ms());
            let Some((f, t)) = newest else { break };
            budget -= 1;
            match self.refuse(self.park(d, f), &t, f) {
                Ok(()) => self.stats[d].pushed_out.inc(),
                Err(MoveError::Race) => {}
                Err(_) => break,
            }
        }
        // Release in priority order while the server's queue is short.
        let depth = if closing { u32::MAX } else { s.depth };
        while budget > 0 {
            // Nothing held: no timer needed.
            let c = (0..classes).find(|&c| self.class_waiting(c) > 0)?;
            budget -= 1;
            // The older of the class's two heads (IPv4, IPv6).
            let oldest = (0..2)
                .filter_map(|f| self.park(c, f).peek(false).map(|h| (f, h)))
                .max_by_key(|(_, h)| h.peer.age_ms());
            let Some((f, h)) = oldest else { continue };
            let park = self.park(c, f);
            let moved = {
                let rcu = rcu::read_lock();
                match park.lookup(&rcu, &h.peer, self.port) {
                    Some(dst) if dst.waiting() >= depth => return Some(due),
                    Some(dst) => park.move_to(&h, &dst),
                    None => Err(MoveError::NoListener),
                }
            };
            match moved {
                Ok(_) => self.count_release(&self.stats[c], h.peer.age_ms()),
                Err(MoveError::Race) => {}
                // The server's queue is full (of its own direct clients): wait for it.
                Err(MoveError::Full) => return Some(due),
                // No listener (or one of another family) can take it: reset it rather
                // than hold it with nobody to serve it.
                Err(_) => match self.refuse(park, &h, f) {
                    Ok(()) => self.stats[c].lost.inc(),
                    Err(MoveError::Race) => {}
                    Err(_) => return Some(due),
                },
            }
        }
        // Out of budget: the timer goes on at once.
        self.pending.xchg(true, Full);
        Some(0)
    }

    /// The readings of class `c`.
    pub(crate) fn read(&self, c: usize) -> ClassReading {
        let st = &self.stats[c];
        let mut h = [0u64; hist::BUCKETS];
        for (d, s) in h.iter_mut().zip(st.hist.iter()) {
            *d = s.get();
        }
        ClassReading {
            deadline_ms: self.settings().deadline_ms[c],
            stats: [
                (prio_stat::WAITING, u64::from(self.class_waiting(c))),
                (prio_stat::ADMITTED, st.admitted.get()),
                (prio_stat::RELEASED, st.released.get()),
                (prio_stat::PUSHED_OUT, st.pushed_out.get()),
                (prio_stat::EXPIRED, st.expired.get()),
                (prio_stat::REFUSED, st.refused.get()),
                (prio_stat::DELAY_NS, st.delay_ns.get()),
                (prio_stat::LOST, st.lost.get()),
            ],
            hist: h,
        }
    }

    /// Stops the timer for good. Process context.
    fn close(&self) {
        *self.gone.lock() = true;
        // `gone` is set under its lock, so nothing queues the timer again.
        self.work.cancel_sync();
    }
}

/// The forwarder of a prioritized port's refusal listeners: in process context, accepts
/// and resets every connection moved there.
pub(crate) struct Refuse;

impl Forwarder for Refuse {
    fn drain(&self, l: &ModuleListener<Self>, cx: &DrainCx<'_>) -> Drained {
        if !cx.process() {
            return Drained::Defer;
        }
        for _ in 0..limits::HOOK_BUDGET {
            if l.queue_head(cx, true).is_none() {
                return Drained::Empty;
            }
            if l.refuse_head(cx).is_err() {
                return Drained::Defer;
            }
        }
        Drained::Defer
    }
}

/// The prioritized ports of a namespace, as the classifier's hooks look them up: at most
/// [`limits::MAX_PRIO_PORTS`], no allocation under the lock.
#[pin_data]
pub(crate) struct PrioTable {
    #[pin]
    ports: SpinLockIrq<[Option<Arc<PrioCore>>; limits::MAX_PRIO_PORTS]>,
}

impl PrioTable {
    /// An empty table.
    pub(crate) fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                ports <- new_spinlock_irq!([const { None }; limits::MAX_PRIO_PORTS], "openqos_prio_table"),
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// The queue of `port`, if it is prioritized.
    pub(crate) fn find(&self, port: u16) -> Option<Arc<PrioCore>> {
        let t = self.ports.lock();
        t.iter().flatten().find(|p| p.port == port).cloned()
    }

    fn insert(&self, core: Arc<PrioCore>) -> Result<(), Arc<PrioCore>> {
        let mut t = self.ports.lock();
        match t.iter_mut().find(|s| s.is_none()) {
            Some(slot) => {
                *slot = Some(core);
                Ok(())
            }
            None => Err(core),
        }
    }

    fn remove(&self, port: u16) -> Option<Arc<PrioCore>> {
        let mut t = self.ports.lock();
        t.iter_mut()
            .find(|s| s.as_ref().is_some_and(|p| p.port == port))
            .and_then(Option::take)
    }
}

/// A prioritized port of a namespace, owned by the store: its queue and the listeners
/// whose accept queues hold its connections.
pub(crate) struct PrioPort {
    /// The queue discipline (shared with the classifier and the port's meter).
    pub(crate) core: Arc<PrioCore>,
    parks: KVec<ListenSock>,
    rejects: KVec<Pin<KBox<ModuleListener<Refuse>>>>,
}

impl PrioPort {
    /// Creates the prioritized queue of `port` in `net` with `classes` classes and the
    /// settings `s`, and enters it in `table`. Nothing is left behind on failure.
    pub(crate) fn new(
        net: NetRef,
        table: &PrioTable,
        port: u16,
        classes: u8,
        s: Settings,
    ) -> Result<Self, Rejection> {
        let fams = [Family::Inet, Family::Inet6Dual];
        let n = usize::from(classes);
        let mut parks = KVec::with_capacity(2 * n, GFP_KERNEL)?;
        let mut park_refs = KVec::with_capacity(2 * n, GFP_KERNEL)?;
        for _ in 0..n {
            for f in fams {
                let p = ListenSock::hidden(net, f).map_err(|e| {
                    reject(e, c_str!("could not create the queue's listeners"), None)
                })?;
                park_refs.push(p.sk_ref(), GFP_KERNEL)?;
                parks.push(p, GFP_KERNEL)?;
            }
        }
        let mut rejects = KVec::with_capacity(2, GFP_KERNEL)?;
        let mut reject_refs = KVec::with_capacity(2, GFP_KERNEL)?;
        for f in fams {
            let l = ModuleListener::new_hidden(net, f, Refuse)
                .map_err(|e| reject(e, c_str!("could not create the queue's listeners"), None))?;
            reject_refs.push(l.sk_ref(), GFP_KERNEL)?;
            rejects.push(l, GFP_KERNEL)?;
        }
        let core = Arc::pin_init(
            pin_init!(PrioCore {
                port,
                classes,
                settings <- new_spinlock_irq!(s, "openqos_prio_settings"),
                parks: park_refs,
                rejects: reject_refs,
                stats: [const { ClassStats::new() }; CLASSES],
                pumping: Atomic::new(false),
                pending: Atomic::new(false),
                closing: Atomic::new(false),
                last_accept: Atomic::new(0),
                interval_ns: Atomic::new(0),
                gone <- new_spinlock_irq!(false, "openqos_prio_gone"),
                work <- new_timer!(),
            }),
            GFP_KERNEL_ACCOUNT,
        )?;
        table.insert(core.clone()).map_err(|_| {
            reject(
                ENOSPC,
                c_str!("too many prioritized ports in this namespace (16)"),
                None,
            )
        })?;
        Ok(Self {
            core,
            parks,
            rejects,
        })
    }

    /// Takes the port out of `table` and closes it: the connections it holds go to the
    /// server's accept queue as far as it has room, the rest are reset. The caller has
    /// already taken the queue off the port's meter. Process context.
    pub(crate) fn shutdown(self, table: &PrioTable) {
        drop(table.remove(self.core.port));
        // Hooks that found the queue in the table run inside RCU read sections: after
        // this none moves a connection in any more (a late one finds a closed park and
        // is refused).
        rcu::synchronize_rcu();
        let core = &self.core;
        core.close();
        core.closing.store(true, Relaxed);
        // Release everything the server takes; bounded by what is held (each pass moves
        // at least one connection, or stops).
        let mut last = u32::MAX;
        for _ in 0..=limits::MAX_PRIO_HELD {
            let held = core.held();
            if held == 0 || held >= last {
                break;
            }
            last = held;
            core.pending.xchg(true, Full);
            core.pump();
        }
        // Closing the parks resets what the server had no room for; the refusal
        // listeners reset what they hold when they close.
        drop(self.parks);
        drop(self.rejects);
    }
}
