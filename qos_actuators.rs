// SPDX-License-Identifier: GPL-2.0

//! Actuators: socket groups with timer-replenished quotas.
//!
//! A [`Group`] is a set of metered listening ports whose connections share a quota
//! (the paper's socket groups). Accept-ratio and accept-rate groups govern `accept()`
//! on the ports' listeners; output groups govern the bytes that every connection
//! accepted from the ports sends (`write`, `send`, `sendfile`, `splice`). The wrapped
//! socket operations of the sensors (`qos_sensor.rs`) ask the group before they let a
//! call through: with quota the call proceeds, without it a blocking caller sleeps on
//! its socket and a non-blocking one gets `EAGAIN` and no readiness from `poll`. Each
//! group has one timer (a delayed work item), armed only while someone is held back,
//! which wakes them when the quota has come back. Quotas are computed from the clock
//! when they are used, under the group's lock, so they are exact across CPUs whatever
//! the timer's resolution.
//!
//! The logic is safe Rust over the shared `quota` module, with no unsafe code: the timer
//! is a [`Timer`] whose queued runs own a reference to their group, and the sensors see a
//! group only as a [`Governor`], the trait they own.
//!
//! Layering: below the store (which creates groups and joins meters to them), above the
//! sensors (`Meter`, `Counter`, `Governor`), the timer and the error leaf.

use crate::{
    abi::{group_flags, group_stat, group_type, limits},
    qos_error::{reject, Rejection},
    qos_sensor::{now_ns, Counter, Governor, InForce, Meter, Verdict},
    qos_work::{impl_has_timer, new_timer, Timer, TimerItem},
    quota::{self, Credit, Ratio, TokenBucket},
};
use kernel::{
    c_str,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, ArcBorrow, Mutex,
    },
};

/// How long a held-back member of an accept-ratio group sleeps at most before it looks
/// at the others again (they may have drained their queues without accepting more).
const RATIO_RECHECK_NS: u64 = 20_000_000;

/// A port of a group.
struct Member {
    meter: Arc<Meter>,
    /// Connections accepted, or bytes sent, through the group from this port.
    hits: u64,
    /// Attached as an FTP control port ([`group_flags::FTP`] on `GROUP_PORT_ADD`).
    ftp: bool,
}

/// A leased setting of a group: what it goes back to, and when.
#[derive(Clone, Copy)]
struct Lease {
    /// When the lease runs out ([`now_ns`] time).
    until: u64,
    /// The rate before the first leased change.
    rate: u64,
    /// The burst before the first leased change.
    burst: Option<u64>,
}

/// What a group's lock protects.
struct State {
    /// Deleted: it governs nothing any more and its timer is not armed again.
    dead: bool,
    /// Configured rate (connections or bytes per second; 0 for ratio groups).
    rate: u64,
    /// Configured burst; `None`: the default for the rate.
    burst: Option<u64>,
    /// The quota of rate and output groups.
    bucket: TokenBucket,
    /// Member ports, in the order they were attached.
    members: KVec<Member>,
    /// The credits of a ratio group, one per member (same order).
    credits: KVec<Credit>,
    /// Tasks sleeping on the quota.
    sleeping: u64,
    /// A poller was told "not ready": the timer must wake it.
    polled: bool,
    /// The timer is queued.
    armed: bool,
    /// When the queued timer runs ([`now_ns`] time), while `armed`.
    due: u64,
    /// The rate and burst in force are leased: the timer restores these when it ends.
    lease: Option<Lease>,
    /// Counted as in force ([`Group::publish`] until [`Group::shutdown`]).
    in_force: Option<InForce>,
}

impl State {
    fn member(&self, meter: &Meter) -> Option<usize> {
        self.members
            .iter()
            .position(|m| core::ptr::eq(&*m.meter, meter))
    }
}

/// A socket group.
///
/// # Invariants
///
/// A group lives in an [`Arc`] ([`Group::new`]). Its timer is only queued under the lock
/// of `state` while `dead` is false; [`Group::shutdown`] sets `dead` and then cancels it,
/// so after a shutdown (namespace exit and module unload shut every group down) no run
/// of the module's code is left queued.
#[pin_data]
pub(crate) struct Group {
    /// The group's number in its namespace.
    pub(crate) id: u32,
    /// One of [`group_type`].
    pub(crate) kind: u8,
    /// Bits of [`group_flags`].
    flags: Atomic<u32>,
    admitted: Counter,
    held: Counter,
    ftp_joined: Counter,
    timer_runs: Counter,
    lease_expired: Counter,
    #[pin]
    state: Mutex<State>,
    #[pin]
    work: Timer<Group>,
}

/// A snapshot of a group for `GROUP_GET`.
pub(crate) struct GroupReading {
    /// Configured rate.
    pub(crate) rate: u64,
    /// Burst in force.
    pub(crate) burst: u64,
    /// Bits of [`group_flags`].
    pub(crate) flags: u32,
    /// A leased setting: milliseconds left, and the rate it goes back to.
    pub(crate) lease: Option<(u32, u64)>,
    /// `(port, weight, hits, flags)` of every member (flags: [`group_flags::FTP`] for a
    /// port attached as an FTP control port).
    pub(crate) members: KVec<(u16, u32, u64, u32)>,
    /// `(attribute, value)` for every [`group_stat`] attribute.
    pub(crate) stats: [(u16, u64); group_stat::MAX as usize],
}

/// The burst of a bucket of `rate` per second when none is given.
fn default_burst(kind: u8, rate: u64) -> u64 {
    let min = if kind == group_type::OUTPUT {
        limits::MIN_OUTPUT_BURST
    } else {
        1
    };
    quota::default_burst(rate, min)
}

impl Group {
    /// A new group, governing nothing until ports are attached.
    pub(crate) fn new(
        id: u32,
        kind: u8,
        rate: Option<u64>,
        burst: Option<u64>,
        flags: u32,
    ) -> Result<Arc<Self>, Rejection> {
        let rate = match (kind, rate) {
            (group_type::RATIO, None) => 0,
            (group_type::RATIO, Some(_)) => {
                return Err(reject(
                    EINVAL,
                    c_str!("accept-ratio groups take weights per port, not a rate"),
                    Some(crate::abi::attr::RATE),
                ))
            }
            (group_type::RATE | group_type::OUTPUT, Some(r)) => r,
            (group_type::RATE | group_type::OUTPUT, None) => {
                return Err(reject(
                    EINVAL,
                    c_str!("accept-rate and output groups need a rate"),
                    Some(crate::abi::attr::RATE),
                ))
            }
            _ => {
                return Err(reject(
                    EINVAL,
                    c_str!("unknown group type"),
                    Some(crate::abi::attr::GROUP_TYPE),
                ))
            }
        };
        if kind == group_type::RATIO && burst.is_some() {
            return Err(reject(
                EINVAL,
                c_str!("accept-ratio groups have no burst"),
                Some(crate::abi::attr::BURST),
            ));
        }
        let b = burst.unwrap_or_else(|| default_burst(kind, rate));
        let g = Arc::pin_init(
            pin_init!(Self {
                id,
                kind,
                flags: Atomic::new(flags),
                admitted: Counter::new(),
                held: Counter::new(),
                ftp_joined: Counter::new(),
                timer_runs: Counter::new(),
                lease_expired: Counter::new(),
                state <- kernel::new_mutex!(State {
                    dead: false,
                    rate,
                    burst,
                    bucket: TokenBucket::new(rate, b, now_ns()),
                    members: KVec::new(),
                    credits: KVec::new(),
                    sleeping: 0,
                    polled: false,
                    armed: false,
                    due: 0,
                    lease: None,
                    in_force: None,
                }),
                work <- new_timer!(),
            }),
            GFP_KERNEL,
        )?;
        // INVARIANT: made in an `Arc`.
        Ok(g)
    }

    /// Counts the group as in force (its namespace holds it now, and will shut it down).
    pub(crate) fn publish(&self) {
        let mut s = self.state.lock();
        if !s.dead && s.in_force.is_none() {
            s.in_force = Some(InForce::new());
        }
    }

    /// Attaches `meter`'s port with `weight` (ratio groups); `ftp`: as an FTP control
    /// port (its connections' passive replies are watched even if the group's are not).
    pub(crate) fn add_port(
        &self,
        meter: Arc<Meter>,
        weight: u32,
        ftp: bool,
    ) -> Result<(), Rejection> {
        let mut s = self.state.lock();
        if s.members.len() >= limits::MAX_GROUP_PORTS {
            return Err(reject(
                ENOSPC,
                c_str!("too many ports in this group (16)"),
                Some(crate::abi::attr::PORT),
            ));
        }
        s.members.reserve(1, GFP_KERNEL)?;
        s.credits.reserve(1, GFP_KERNEL)?;
        s.members.push(
            Member {
                meter,
                hits: 0,
                ftp,
            },
            GFP_KERNEL,
        )?;
        s.credits.push(
            Credit {
                weight,
                left: weight,
            },
            GFP_KERNEL,
        )?;
        Ok(())
    }

    /// Detaches `port`; returns its meter. Whoever it held back looks again.
    pub(crate) fn del_port(&self, port: u16) -> Option<Arc<Meter>> {
        let m = {
            let mut s = self.state.lock();
            let i = s.members.iter().position(|m| m.meter.port == port)?;
            drop(s.credits.remove(i));
            s.members.remove(i).ok()?.meter
        };
        self.wake_meter(&m);
        Some(m)
    }

    /// Whether `port` is a member, and how many members there are. Allocates nothing.
    pub(crate) fn membership(&self, port: u16) -> (bool, usize) {
        let s = self.state.lock();
        let member = s.members.iter().any(|m| m.meter.port == port);
        (member, s.members.len())
    }

    /// Changes rate, burst and flags live. Tokens earned so far are kept (up to the new
    /// burst); held-back callers look again at once.
    ///
    /// With `lease_ms`, the rate and burst hold for that long (a lease running already
    /// is renewed); when it runs out the group's timer restores the rate and burst the
    /// group had before the first leased change, so a controller that dies never
    /// leaves its setting behind. A rate or burst set without a lease is the group's new
    /// setting and ends a lease.
    pub(crate) fn set(
        &self,
        rate: Option<u64>,
        burst: Option<u64>,
        flags: Option<u32>,
        lease_ms: Option<u32>,
    ) -> Result<(), Rejection> {
        if self.kind == group_type::RATIO && (rate.is_some() || burst.is_some()) {
            return Err(reject(
                EINVAL,
                c_str!("accept-ratio groups take weights per port, not a rate or burst"),
                Some(if rate.is_some() {
                    crate::abi::attr::RATE
                } else {
                    crate::abi::attr::BURST
                }),
            ));
        }
        if self.kind == group_type::RATIO && lease_ms.is_some() {
            return Err(reject(
                EINVAL,
                c_str!("leases are for the rate of accept-rate and output groups"),
                Some(crate::abi::attr::LEASE_MS),
            ));
        }
        {
            let mut s = self.state.lock();
            let now = now_ns();
            match lease_ms {
                Some(ms) => {
                    let until = now.saturating_add(u64::from(ms) * 1_000_000);
                    let (rate, burst) = (s.rate, s.burst);
                    let l = s.lease.get_or_insert(Lease { until, rate, burst });
                    l.until = until;
                }
                None if rate.is_some() || burst.is_some() => s.lease = None,
                None => {}
            }
            if let Some(r) = rate {
                s.rate = r;
            }
            if burst.is_some() {
                s.burst = burst;
            }
            let b = s.burst.unwrap_or_else(|| default_burst(self.kind, s.rate));
            let r = s.rate;
            s.bucket.set(r, b, now);
            if let Some(l) = s.lease {
                self.arm_locked(&mut s, l.until, now);
            }
        }
        if let Some(f) = flags {
            self.flags.store(f, Relaxed);
        }
        self.wake_all();
        Ok(())
    }

    /// Changes the weight of member `port` (ratio groups).
    pub(crate) fn set_weight(&self, port: u16, weight: u32) -> Result<(), Rejection> {
        if self.kind != group_type::RATIO {
            return Err(reject(
                EINVAL,
                c_str!("only accept-ratio groups have weights"),
                Some(crate::abi::attr::WEIGHT),
            ));
        }
        {
            let mut s = self.state.lock();
            let i = s
                .members
                .iter()
                .position(|m| m.meter.port == port)
                .ok_or(reject(
                    ENOENT,
                    c_str!("this port is not in the group"),
                    Some(crate::abi::attr::PORT),
                ))?;
            s.credits[i] = Credit {
                weight,
                left: weight.min(s.credits[i].left),
            };
        }
        self.wake_all();
        Ok(())
    }

    /// Stops governing: every caller held back resumes on the protocol's operations,
    /// the timer is cancelled and every member port leaves the group (its meter forgets
    /// it). Allocates nothing, so it cannot half succeed: until December 2026 it returned
    /// the meters in a new vector for the caller to detach, and a failed allocation (the
    /// fail-nth sweep, `39-failnth`) left a port marked grouped by a deleted group,
    /// its meter impossible to delete.
    pub(crate) fn shutdown(&self) {
        let members = {
            let mut s = self.state.lock();
            s.in_force = None;
            s.dead = true;
            drop(core::mem::take(&mut s.credits));
            core::mem::take(&mut s.members)
        };
        // `dead` is set, so nothing queues it again; process context (a netlink request,
        // namespace exit or module unload). Never called from the timer's run.
        self.work.cancel_sync();
        for m in members.iter() {
            self.wake_meter(&m.meter);
            m.meter.leave(self);
        }
    }

    /// A new reference to the group.
    fn arc(&self) -> Arc<Self> {
        // SAFETY: every group lives in an `Arc` (type invariant), which `self` keeps
        // alive.
        unsafe { ArcBorrow::from_raw(self) }.into()
    }

    /// The smallest piece a sender waits for: a quarter of the burst.
    fn piece(bucket: &TokenBucket) -> u64 {
        (bucket.burst() / 4).max(1)
    }

    /// Has the timer run at `due` ([`now_ns`] time; at least 1 ms from `now`), or
    /// sooner if it is queued for sooner already. The caller holds the lock.
    fn arm_locked(&self, s: &mut State, due: u64, now: u64) {
        if s.dead {
            return;
        }
        // A timer queued for later (a slower rate, before a change) is brought forward:
        // otherwise it would hold pollers back for the old nap.
        if !s.armed || due < s.due {
            let ms = u32::try_from(due.saturating_sub(now).div_ceil(1_000_000))
                .unwrap_or(u32::MAX)
                .max(1);
            s.armed = true;
            s.due = due;
            // INVARIANT: queued under the lock, not dead.
            Timer::<Self>::after(self.arc(), ms);
        }
    }

    /// Wakes everyone the group may hold back: its listeners (accept groups) or its
    /// throttled connections (output groups).
    fn wake_all(&self) {
        let meters = {
            let s = self.state.lock();
            let mut v = KVec::new();
            for m in s.members.iter() {
                if v.push(m.meter.clone(), GFP_KERNEL).is_err() {
                    break;
                }
            }
            v
        };
        for m in meters.iter() {
            self.wake_meter(m);
        }
    }

    fn wake_meter(&self, m: &Meter) {
        m.wake(self.is_output());
    }

    /// The timer: the quota is back, or a lease ran out; wake whoever waits.
    fn tick(&self) {
        self.timer_runs.inc();
        {
            let mut s = self.state.lock();
            s.armed = false;
            s.polled = false;
            if s.dead {
                return;
            }
            let now = now_ns();
            match s.lease {
                Some(l) if now >= l.until => {
                    // Back to the setting before the lease.
                    s.lease = None;
                    s.rate = l.rate;
                    s.burst = l.burst;
                    let b = l.burst.unwrap_or_else(|| default_burst(self.kind, l.rate));
                    s.bucket.set(l.rate, b, now);
                    self.lease_expired.inc();
                }
                // The timer ran for a quota wait: keep it for the lease too.
                Some(l) => self.arm_locked(&mut s, l.until, now),
                None => {}
            }
        }
        self.wake_all();
    }

    /// The current settings and counters.
    pub(crate) fn read(&self) -> GroupReading {
        let mut s = self.state.lock();
        let mut members = KVec::new();
        for (m, c) in s.members.iter().zip(s.credits.iter()) {
            let flags = if m.ftp { group_flags::FTP } else { 0 };
            if members
                .push((m.meter.port, c.weight, m.hits, flags), GFP_KERNEL)
                .is_err()
            {
                break;
            }
        }
        let tokens = if self.kind == group_type::RATIO {
            0
        } else {
            s.bucket.available(now_ns())
        };
        GroupReading {
            rate: s.rate,
            burst: if self.kind == group_type::RATIO {
                0
            } else {
                s.bucket.burst()
            },
            flags: self.flags.load(Relaxed),
            lease: s.lease.map(|l| {
                let left = l.until.saturating_sub(now_ns()).div_ceil(1_000_000);
                (u32::try_from(left).unwrap_or(u32::MAX), l.rate)
            }),
            members,
            stats: [
                (group_stat::ADMITTED, self.admitted.get()),
                (group_stat::HELD, self.held.get()),
                (group_stat::SLEEPING, s.sleeping),
                (group_stat::TOKENS, tokens),
                (group_stat::FTP_JOINED, self.ftp_joined.get()),
                (group_stat::TIMER_RUNS, self.timer_runs.get()),
                (group_stat::LEASE_EXPIRED, self.lease_expired.get()),
            ],
        }
    }
}

impl Governor for Group {
    /// Whether the group governs output (else `accept()`).
    fn is_output(&self) -> bool {
        self.kind == group_type::OUTPUT
    }

    /// Whether every member port is an FTP control port (the group was made with
    /// [`group_flags::FTP`]; ports can also be attached as one, see [`Self::add_port`]).
    fn ftp(&self) -> bool {
        self.flags.load(Relaxed) & group_flags::FTP != 0
    }

    /// Counts an FTP data listener that joined through this group's port.
    fn ftp_joined(&self) {
        self.ftp_joined.inc();
    }

    // --- accept ------------------------------------------------------------------

    /// Takes the quota for one `accept()` on `meter`'s port.
    fn accept_take(&self, meter: &Meter) -> Verdict {
        let mut s = self.state.lock();
        let Some(me) = (!s.dead).then(|| s.member(meter)).flatten() else {
            return Verdict::Free;
        };
        let now = now_ns();
        match self.kind {
            group_type::RATE => {
                if s.bucket.take_one(now) {
                    Verdict::Go(1)
                } else {
                    Verdict::Wait(s.bucket.wait_ns(1, now))
                }
            }
            group_type::RATIO => {
                let st = &mut *s;
                let members = &st.members;
                match quota::ratio_admit(&mut st.credits, me, |j| members[j].meter.busy()) {
                    Ratio::Go { .. } => Verdict::Go(1),
                    Ratio::Wait => Verdict::Wait(RATIO_RECHECK_NS),
                }
            }
            _ => Verdict::Free,
        }
    }

    /// Ends an `accept()` that took the quota: `ok` if it returned a connection, else
    /// the quota goes back.
    fn accept_done(&self, meter: &Meter, ok: bool) {
        let wake = {
            let mut s = self.state.lock();
            let Some(me) = s.member(meter) else {
                return;
            };
            if ok {
                s.members[me].hits += 1;
                self.admitted.inc();
            } else if self.kind == group_type::RATE {
                s.bucket.give_back(1);
            } else {
                let c = &mut s.credits[me];
                c.left = (c.left + 1).min(c.weight);
            }
            // Credits moved: a held-back member may now go (ratio groups).
            ok && self.kind == group_type::RATIO && (s.sleeping > 0 || s.polled)
        };
        if wake {
            self.wake_all();
        }
    }

    /// `None` if an `accept()` on `meter`'s port would get the quota now (or is not
    /// governed), else how long until it should look again.
    fn accept_nap(&self, meter: &Meter) -> Option<u64> {
        let mut s = self.state.lock();
        let me = (!s.dead).then(|| s.member(meter)).flatten()?;
        match self.kind {
            group_type::RATE => {
                let w = s.bucket.wait_ns(1, now_ns());
                (w > 0).then_some(w)
            }
            group_type::RATIO => {
                let members = &s.members;
                (!quota::ratio_would_admit(&s.credits, me, |j| members[j].meter.busy()))
                    .then_some(RATIO_RECHECK_NS)
            }
            _ => None,
        }
    }

    // --- output ------------------------------------------------------------------

    /// Takes up to `want` bytes of output quota, but no less than a useful piece
    /// ([`Group::piece`], or all of `want` if smaller): a sender that took every byte as
    /// it trickled in would never sleep, and would send in pieces of a few bytes.
    fn send_take(&self, want: u64) -> Verdict {
        let mut s = self.state.lock();
        if s.dead {
            return Verdict::Free;
        }
        let now = now_ns();
        let need = want.min(Self::piece(&s.bucket));
        match s.bucket.wait_ns(need, now) {
            0 => Verdict::Go(s.bucket.take_up_to(want, now)),
            w => Verdict::Wait(w),
        }
    }

    /// Ends a send that took `took` bytes of quota and sent `sent` of them from
    /// `meter`'s port; the rest goes back.
    fn send_done(&self, meter: &Meter, took: u64, sent: u64) {
        let mut s = self.state.lock();
        if took > sent {
            s.bucket.give_back(took - sent);
        }
        self.admitted.add(sent);
        if let Some(me) = s.member(meter) {
            s.members[me].hits += sent;
        }
    }

    /// `None` if a send would get a useful piece of quota now (see [`Self::send_take`])
    /// or is not governed, else how long until it would.
    fn send_nap(&self) -> Option<u64> {
        let mut s = self.state.lock();
        if s.dead {
            return None;
        }
        let need = Self::piece(&s.bucket);
        match s.bucket.wait_ns(need, now_ns()) {
            0 => None,
            w => Some(w),
        }
    }

    // --- held-back callers and the timer -------------------------------------------

    /// Counts a caller held back for `nap` nanoseconds and arms the timer, which wakes
    /// it (and every other one) when the quota is back. `poller`: it will not sleep
    /// here but wait in `poll`/`epoll`.
    fn hold(&self, nap: u64, poller: bool) {
        self.held.inc();
        self.arm(nap, poller);
    }

    /// Arms the timer for a poller told "not ready" (not counted as held: `poll` may be
    /// asked many times).
    fn arm(&self, nap: u64, poller: bool) {
        let mut s = self.state.lock();
        s.polled |= poller;
        let now = now_ns();
        let due = now.saturating_add(nap.clamp(1_000_000, 1_000_000_000));
        self.arm_locked(&mut s, due, now);
    }

    fn sleeping(&self, start: bool) {
        let mut s = self.state.lock();
        if start {
            s.sleeping += 1;
        } else {
            s.sleeping -= 1;
        }
    }
}

impl_has_timer!(impl HasTimer for Group { self.work });

impl TimerItem for Group {
    /// A queued run owns a reference: the group cannot go while its timer is queued.
    type Ref = Arc<Group>;

    fn run(this: Arc<Group>) {
        this.tick();
    }
}
