// SPDX-License-Identifier: GPL-2.0

//! Sensors: the classifier's counters, and meters of listening ports.
//!
//! Every counter is a relaxed atomic, incremented once per connection at the point where
//! that connection's fate is decided, so a reader sees each connection exactly once.
//! Counters live in reference-counted objects that rule edits carry over, so replacing a
//! rule's condition list never resets them.
//!
//! A [`Meter`] watches one listening port of unmodified servers: how many connections
//! wait in its accept queues, how many the servers accepted, how long each waited
//! between the end of its handshake and `accept()`, and how many bytes the servers read
//! and wrote on them. No hook of the TCP stack sees `accept()` or the server's writes, so
//! the meter wraps the socket operations (`struct proto_ops`) of the port's listeners:
//! the wrapped `accept` measures, and `accept()` hands the wrapped operations on to every
//! accepted socket (`do_accept` copies the listener's `ops`), whose `sendmsg`, `recvmsg`,
//! `splice_read` and `release` count bytes and closes. Each wrapped socket has a
//! [`Tracked`] record as its `sk_user_data`; the pair (operations, record) only changes
//! under the socket's callback lock. See `Documentation/design.md`, "Sensors".
//!
//! This file holds all the unsafe code of the sensors.
//!
//! Layering: below the classifier, the actuators and the store; above the socket core,
//! the timer and the C boundary. Groups are seen through the [`Governor`] trait that this
//! file owns, and the meters' rescan walks the store's meters through a callback the
//! store registers ([`Sensors::register`]).

use crate::qos_ffi as shim;
use crate::{
    abi::{hist, limits, meter_flags, meter_stat},
    ftp,
    qos_sock::{MoveError, NetRef},
    qos_work::{impl_has_timer, Timer, TimerItem},
};
use core::{
    ffi::{c_int, c_long, c_uint, c_void},
    marker::PhantomData,
    ptr::NonNull,
};
use kernel::{
    bindings, c_str,
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Full, Relaxed},
        Arc, Mutex, SpinLock,
    },
    time::Delta,
};

/// A monotonically increasing event counter.
pub(crate) struct Counter(Atomic<u64>);

impl Counter {
    /// A counter at zero.
    pub(crate) const fn new() -> Self {
        Self(Atomic::new(0))
    }

    /// Adds one.
    pub(crate) fn inc(&self) {
        self.0.add(1, Relaxed);
    }

    /// Adds `n`.
    pub(crate) fn add(&self, n: u64) {
        self.0.add(n, Relaxed);
    }

    /// The current value.
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Outcome counters of one rule.
pub(crate) struct RuleStats {
    /// Connections that took the default port.
    pub(crate) default_hits: Counter,
    /// Connections moved into a target's accept queue.
    pub(crate) forwarded: Counter,
    /// Refused: nobody listens on the outgoing port.
    pub(crate) no_listener: Counter,
    /// Refused: the target's accept queue was full.
    pub(crate) queue_full: Counter,
    /// Refused: the target's family cannot take the connection.
    pub(crate) family_mismatch: Counter,
    /// Refused for another reason.
    pub(crate) other_refused: Counter,
    /// Content rules: sent to the default port after the data timeout.
    pub(crate) timed_out: Counter,
    /// Content rules: sent to the default port because too many were waiting for data.
    pub(crate) pending_full: Counter,
    /// Content rules: bytes of data the automaton stepped through.
    pub(crate) scanned: Counter,
    /// Content rules: looks at connections' data.
    pub(crate) looks: Counter,
}

impl RuleStats {
    /// All counters at zero.
    pub(crate) const fn new() -> Self {
        Self {
            default_hits: Counter::new(),
            forwarded: Counter::new(),
            no_listener: Counter::new(),
            queue_full: Counter::new(),
            family_mismatch: Counter::new(),
            other_refused: Counter::new(),
            timed_out: Counter::new(),
            pending_full: Counter::new(),
            scanned: Counter::new(),
            looks: Counter::new(),
        }
    }

    /// Counts a connection refused for `why`.
    pub(crate) fn refused(&self, why: MoveError) {
        match why {
            MoveError::NoListener => self.no_listener.inc(),
            MoveError::Full => self.queue_full.inc(),
            MoveError::Family => self.family_mismatch.inc(),
            MoveError::Race
            | MoveError::Other
            | MoveError::Loop
            | MoveError::Head
            | MoveError::Process => self.other_refused.inc(),
        }
    }
}

/// A connection counter that also sums a quantity (delays, bytes).
pub(crate) struct Sum(Atomic<u64>);

impl Sum {
    const fn new() -> Self {
        Self(Atomic::new(0))
    }

    fn add(&self, v: u64) {
        self.0.add(v, Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// The wrapped operations tables, one per address family (`[v4, v6]`): addresses of
/// `proto_ops` in memory of their own (`oq_ops_alloc`), not in the module's.
///
/// Written by [`Sensors::register`] before any socket can point at a table. A socket, or
/// a task in the middle of a socket call (`do_accept` holds its listener's table across
/// sleeps, `__sock_release` across the inode lock), may keep a table's address for as
/// long as it likes, even after the module is gone: so at unload every function of the
/// tables is made the protocol's again (`oq_ops_neutralize`), and a table any socket ever
/// had is never freed. See `Documentation/design.md`, "Unload and the wrapped tables".
static OPS: [Atomic<usize>; 2] = [Atomic::new(0), Atomic::new(0)];

/// The wrapped operations of family `v6`.
fn ours(v6: bool) -> *const bindings::proto_ops {
    OPS[usize::from(v6)].load(Relaxed) as *const bindings::proto_ops
}

/// The protocol's own operations of family `v6`.
fn orig(v6: bool) -> *const bindings::proto_ops {
    // SAFETY: returns the address of a static table of the kernel.
    unsafe { shim::oq_inet_stream_ops(v6) }
}

/// Tasks inside a wrapper. Module unload waits for it to drop to zero.
static INFLIGHT: Atomic<i64> = Atomic::new(0);

/// Whether sockets may be wrapped (the kernel has Tasks RCU, which unload needs).
static AVAILABLE: Atomic<bool> = Atomic::new(false);

/// Whether any socket was ever wrapped (unload need not wait otherwise).
static EVER_WRAPPED: Atomic<bool> = Atomic::new(false);

/// Marks a task inside a wrapper for as long as it lives.
struct Inflight;

impl Inflight {
    fn enter() -> Self {
        INFLIGHT.fetch_add(1, Full);
        Inflight
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        INFLIGHT.fetch_sub(1, Full);
    }
}

/// The callback lock of a socket, held for reading.
///
/// # Invariants
///
/// `sk` is a valid socket whose `sk_callback_lock` this object holds for reading.
struct CallbackRead(NonNull<bindings::sock>);

impl CallbackRead {
    /// # Safety
    ///
    /// `sk` must be valid for the lifetime of the returned guard.
    unsafe fn new(sk: NonNull<bindings::sock>) -> Self {
        // SAFETY: `sk` is valid (caller).
        unsafe { shim::oq_sk_read_lock(sk.as_ptr()) };
        // INVARIANT: locked just above.
        Self(sk)
    }
}

impl Drop for CallbackRead {
    fn drop(&mut self) {
        // SAFETY: held since `new` (type invariant).
        unsafe { shim::oq_sk_read_unlock(self.0.as_ptr()) };
    }
}

/// The socket of `sock`.
///
/// # Safety
///
/// `sock` must be a valid socket.
unsafe fn sk_of(sock: *mut bindings::socket) -> Option<NonNull<bindings::sock>> {
    // SAFETY: `sock` is valid (caller); `sk` is a plain field.
    NonNull::new(unsafe { (*sock).sk })
}

/// A socket in a call of the socket layer on it: the `sock` that a wrapped `proto_ops`
/// function was given, borrowed for that call. Each wrapper makes one at entry from the
/// raw pointer, and what it does with the socket from then on is safe code on this type.
///
/// # Invariants
///
/// `sock` is a valid socket whose sock is `sk`, in a call of the current task on the
/// wrapped operations of family `v6`, for all of `'a`.
#[derive(Clone, Copy)]
struct Sock<'a> {
    sock: NonNull<bindings::socket>,
    sk: NonNull<bindings::sock>,
    v6: bool,
    _call: PhantomData<&'a bindings::socket>,
}

impl<'a> Sock<'a> {
    /// The socket of a wrapper's call; `None` if it has no sock.
    ///
    /// # Safety
    ///
    /// `sock` is the valid socket of a call of the current task on the wrapped operations
    /// of family `v6`, lasting at least `'a`.
    unsafe fn new(sock: *mut bindings::socket, v6: bool) -> Option<Self> {
        let sock = NonNull::new(sock)?;
        // SAFETY: `sock` is valid (caller).
        let sk = unsafe { sk_of(sock.as_ptr()) }?;
        // INVARIANT: the caller's guarantees; `sk` is `sock`'s sock.
        Some(Self {
            sock,
            sk,
            v6,
            _call: PhantomData,
        })
    }

    /// Runs `f` on the socket's record, if it has one and still has the wrapped
    /// operations, with the callback lock held (so the record cannot go meanwhile).
    fn with_record<R>(&self, f: impl FnOnce(&Tracked) -> R) -> Option<R> {
        // SAFETY: `sk` is valid for the call (type invariant).
        let _g = unsafe { CallbackRead::new(self.sk) };
        // SAFETY: `sock` is valid and its callback lock is held.
        let rec = unsafe { shim::oq_sock_record(self.sock.as_ptr(), ours(self.v6)) };
        // SAFETY: a socket with our operations has a `Tracked` as user data, installed by
        // `Tracked::wrap` (from `Arc::into_raw`) together with the operations and removed
        // only with them under the callback lock we hold (see `oq_sock_record`).
        NonNull::new(rec.cast::<Tracked>()).map(|r| f(unsafe { r.as_ref() }))
    }

    /// A reference to the socket's record, if it has one and still has the wrapped
    /// operations.
    fn record(&self) -> Option<Arc<Tracked>> {
        self.with_record(|r| {
            // SAFETY: the record is alive while it is the user data (the callback lock is
            // held inside `with_record`), and it came from `Arc::into_raw`, so a new
            // reference can be made from it.
            Arc::from(unsafe { kernel::sync::ArcBorrow::from_raw(core::ptr::from_ref(r)) })
        })
    }

    /// The record and the group of kind `output` governing the call (accept groups do
    /// not govern FTP data listeners).
    fn governed(&self, output: bool) -> Option<Governed> {
        let rec = self.record()?;
        let group = if output || !rec.data {
            rec.meter.group(output)
        } else {
            None
        };
        Some(Governed { rec, group })
    }

    /// How long a call may block: the socket's send (`send`) or receive timeout, 0 for
    /// a non-blocking one.
    fn timeo(&self, send: bool, nonblock: bool) -> c_long {
        // SAFETY: `sk` is valid for the call (type invariant).
        unsafe { shim::oq_sock_timeo(self.sk.as_ptr(), send, nonblock) }
    }

    /// Whether the accept queue of the (listening) socket is empty.
    fn accept_queue_empty(&self) -> bool {
        // SAFETY: `sk` is valid for the call (type invariant).
        unsafe { shim::oq_accept_queue_empty(self.sk.as_ptr()) }
    }

    /// The socket's network namespace.
    fn net(&self) -> Option<NetRef> {
        // SAFETY: `sk` is valid for the call (type invariant), and its namespace lives at
        // least as long as it.
        unsafe { NetRef::new(shim::oq_sk_net(self.sk.as_ptr())) }
    }

    /// Sleeps on the socket until `ready` returns 0 (it returns how many nanoseconds to
    /// sleep at most before it is asked again, `u64::MAX` for "until woken"), a signal,
    /// or `timeo` runs out. Returns 0, `-EAGAIN` or the signal's errno.
    fn wait<F: FnMut() -> u64>(&self, timeo: &mut c_long, mut ready: F) -> c_int {
        /// # Safety
        ///
        /// `ctx` must point to an `F`, alive and not otherwise used for the call.
        unsafe extern "C" fn tramp<F: FnMut() -> u64>(ctx: *mut c_void) -> c_long {
            // SAFETY: `ctx` is the `F` passed to `oq_sk_wait` below, alive for its call.
            let f = unsafe { &mut *ctx.cast::<F>() };
            match f() {
                0 => 0,
                u64::MAX => c_long::MAX,
                // SAFETY: a pure conversion.
                ns => unsafe { shim::oq_ns_to_jiffies(ns) },
            }
        }
        // SAFETY: `sk` is the sock of a socket in a call of the current task (type
        // invariant), with a wait queue; `ready` outlives the call.
        unsafe {
            shim::oq_sk_wait(
                self.sk.as_ptr(),
                timeo,
                tramp::<F>,
                core::ptr::from_mut(&mut ready).cast(),
            )
        }
    }

    /// Takes the record off the socket, if it still has one and our operations; with
    /// `restore`, the socket gets the protocol's operations back. The connection's bytes
    /// join its meter's totals. Whoever takes the record off (this, or the meter's
    /// shutdown: the exchange happens under the socket's callback lock) releases it, so
    /// it is released exactly once.
    fn detach(&self, restore: bool) {
        let Some(rec) = self.with_record(core::ptr::from_ref) else {
            return;
        };
        let to = if restore {
            orig(self.v6)
        } else {
            core::ptr::null()
        };
        // SAFETY: `sk` is valid (type invariant); `rec` is only compared, under the lock,
        // with the user data; if it still is, we now own the reference it held.
        if unsafe { shim::oq_sock_unwrap(self.sk.as_ptr(), rec.cast(), ours(self.v6), to) } {
            // SAFETY: the user data held a reference from `Arc::into_raw`.
            let rec = unsafe { Arc::from_raw(rec) };
            rec.meter.forget(&rec);
            if restore && rec.listener {
                // Tasks blocked in our `accept` on it restart on the protocol's: nobody
                // would kick them at unload, the socket being no longer ours.
                rec.kick();
            }
        }
    }
}

/// The protocol's `accept`.
type AcceptFn = unsafe extern "C" fn(
    *mut bindings::socket,
    *mut bindings::socket,
    *mut bindings::proto_accept_arg,
) -> c_int;

/// A call of `proto_ops::accept`: the listener, the new socket and the arguments, and the
/// protocol's `accept` for them.
///
/// # Invariants
///
/// `newsock` and `arg` are those of the call that `sock` is in, valid for it, and `f` is
/// the protocol's `accept` of `sock`'s family.
struct AcceptCall<'a> {
    sock: Sock<'a>,
    newsock: *mut bindings::socket,
    arg: NonNull<bindings::proto_accept_arg>,
    f: AcceptFn,
}

impl AcceptCall<'_> {
    /// Sets the call's `O_NONBLOCK` to `on`; returns whether it was set.
    fn set_nonblock(&self, on: bool) -> bool {
        // SAFETY: `arg` is valid for the call (type invariant).
        unsafe { shim::oq_accept_nonblock(self.arg.as_ptr(), on) }
    }

    /// The protocol's `accept`, with the call's arguments as they are now.
    fn accept(&self) -> c_int {
        // SAFETY: the arguments of the call, valid for it, and the protocol's function
        // for them (type invariant); our caller's guarantees are those of the protocol's
        // `accept`.
        unsafe { (self.f)(self.sock.sock.as_ptr(), self.newsock, self.arg.as_ptr()) }
    }
}

/// The protocol's `sendmsg`.
type SendFn = unsafe extern "C" fn(*mut bindings::socket, *mut bindings::msghdr, usize) -> c_int;

/// A call of `proto_ops::sendmsg`: the socket, the message, and the protocol's
/// `sendmsg`.
///
/// # Invariants
///
/// `msg` is the message of the call that `sock` is in, valid for it, and `f` is the
/// protocol's `sendmsg` of `sock`'s family.
struct SendCall<'a> {
    sock: Sock<'a>,
    msg: NonNull<bindings::msghdr>,
    f: SendFn,
}

impl SendCall<'_> {
    /// Whether the caller asked not to block (`MSG_DONTWAIT` or a non-blocking file).
    fn dontwait(&self) -> bool {
        // SAFETY: `msg` is valid for the call (type invariant).
        unsafe { shim::oq_msg_dontwait(self.msg.as_ptr()) }
    }

    /// The bytes of the message not sent yet.
    fn left(&self) -> usize {
        // SAFETY: as above.
        unsafe { shim::oq_msg_left(self.msg.as_ptr()) }
    }

    /// The protocol's `sendmsg` for `len` bytes.
    fn send(&self, len: usize) -> c_int {
        // SAFETY: the arguments of the call, valid for it, and the protocol's function
        // for them (type invariant); our caller's guarantees are those of the protocol's
        // `sendmsg`.
        unsafe { (self.f)(self.sock.sock.as_ptr(), self.msg.as_ptr(), len) }
    }

    /// The protocol's `sendmsg` for at most `n` of the bytes left: the message is cut to
    /// `n` for the call and restored after it.
    fn send_at_most(&self, n: usize) -> c_int {
        let left = self.left();
        // SAFETY: `msg` is valid (type invariant); the cut is restored right after.
        let cut = unsafe { shim::oq_msg_limit(self.msg.as_ptr(), n) };
        let r = self.send(n.min(left));
        // SAFETY: as above.
        unsafe { shim::oq_msg_unlimit(self.msg.as_ptr(), cut) };
        r
    }

    /// Copies the start of the message into `buf`; returns how many bytes it copied.
    fn peek(&self, buf: &mut [u8]) -> usize {
        // SAFETY: `msg` is valid (type invariant); `buf` has room for `buf.len()` bytes.
        let n = unsafe { shim::oq_msg_peek(self.msg.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        n.min(buf.len())
    }
}

/// The clock of the sensors' timestamps and the groups' quotas (monotonic, nanoseconds).
pub(crate) fn now_ns() -> u64 {
    // SAFETY: reads the monotonic clock; callable in any context.
    unsafe { shim::oq_now_ns() }
}

/// What a [`Governor`] decided about a caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Go ahead; for output groups, with this many bytes of quota taken.
    Go(u64),
    /// Out of quota: look again in at most this many nanoseconds (or when woken).
    Wait(u64),
    /// Not governed (the group was deleted, or the port left it): use the protocol.
    Free,
}

/// A socket group as the wrapped operations see it: the quota that a wrapped `accept`
/// or `sendmsg` asks for before it lets a call through, and the timer that wakes the
/// callers it holds back. A meter's port is in at most one accept and one output group
/// ([`Meter::join`]).
///
/// The sensors own this trait and the actuators implement it (`qos_actuators::Group`), so
/// the sensors import nothing above them, as the socket core sees the classifier only
/// through `Forwarder`.
pub(crate) trait Governor: Send + Sync {
    /// Whether it governs output (else `accept()`).
    fn is_output(&self) -> bool;
    /// Whether its ports are FTP control ports (group flag `FTP`).
    fn ftp(&self) -> bool;
    /// Counts an FTP data listener that joined it.
    fn ftp_joined(&self);
    /// Takes the quota for one `accept()` on `meter`'s port.
    fn accept_take(&self, meter: &Meter) -> Verdict;
    /// The `accept()` that [`Governor::accept_take`] let through is done (`ok`: it
    /// accepted a connection).
    fn accept_done(&self, meter: &Meter, ok: bool);
    /// How long an `accept()` on `meter`'s port must wait now, if at all.
    fn accept_nap(&self, meter: &Meter) -> Option<u64>;
    /// Takes up to `want` bytes of output quota.
    fn send_take(&self, want: u64) -> Verdict;
    /// A send of `took` bytes of quota wrote `sent`: the rest goes back.
    fn send_done(&self, meter: &Meter, took: u64, sent: u64);
    /// How long a send must wait now, if at all.
    fn send_nap(&self) -> Option<u64>;
    /// Counts a caller held back for `nap` nanoseconds and arms the timer that wakes it
    /// (`poller`: it waits in `poll`, not asleep here).
    fn hold(&self, nap: u64, poller: bool);
    /// Arms the timer for a poller told "not ready" (not counted as held).
    fn arm(&self, nap: u64, poller: bool);
    /// A task starts (`true`) or stops sleeping on the quota (see [`Sleeper`]).
    fn sleeping(&self, start: bool);
}

/// A task asleep on a governor's quota (counted in its `SLEEPING` statistic) until the
/// guard goes.
struct Sleeper<'a>(&'a dyn Governor);

impl<'a> Sleeper<'a> {
    fn new(g: &'a dyn Governor) -> Self {
        g.sleeping(true);
        Self(g)
    }
}

impl Drop for Sleeper<'_> {
    fn drop(&mut self) {
        self.0.sleeping(false);
    }
}

/// Governors in force in all namespaces: while there are none, the wrapped `sendmsg`,
/// `poll` and `recvmsg` skip looking for one.
static LIVE: Atomic<u64> = Atomic::new(0);

/// Whether any governor is in force (a hint: one being created or deleted may be missed
/// by a concurrent caller, which then sees it on its next call).
fn any_governor() -> bool {
    LIVE.load(Relaxed) != 0
}

/// A governor counted as in force for as long as this lives.
pub(crate) struct InForce(());

impl InForce {
    /// Counts one more governor in force.
    pub(crate) fn new() -> Self {
        LIVE.add(1, Relaxed);
        Self(())
    }
}

impl Drop for InForce {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Relaxed);
    }
}

/// What a wrapper found on a socket: its record and the group governing the call.
struct Governed {
    rec: Arc<Tracked>,
    group: Option<Arc<dyn Governor>>,
}

/// `accept()` on a listener of an accept group: waits for the group's quota, then takes
/// a connection with the protocol's `accept` (non-blocking, so that no quota is held
/// while the queue is empty).
fn governed_accept(g: &dyn Governor, rec: &Tracked, call: &AcceptCall<'_>) -> c_int {
    let sk = call.sock;
    // Reading the caller's O_NONBLOCK, and setting it for the protocol's calls below.
    let nonblock = call.set_nonblock(true);
    let mut timeo = sk.timeo(false, nonblock);
    let err = loop {
        let verdict = if rec.meter.governed_by(g) {
            g.accept_take(&rec.meter)
        } else {
            Verdict::Free
        };
        match verdict {
            Verdict::Go(_) => {
                let err = call.accept();
                g.accept_done(&rec.meter, err == 0);
                if err != EAGAIN.to_errno() || nonblock {
                    break err;
                }
            }
            Verdict::Free => {
                // The caller's own flags.
                call.set_nonblock(nonblock);
                break call.accept();
            }
            Verdict::Wait(nap) => {
                let empty = sk.accept_queue_empty();
                if nonblock {
                    if !empty {
                        rec.throttled.store(true, Relaxed);
                        g.hold(nap, true);
                    }
                    break EAGAIN.to_errno();
                }
                if !empty {
                    g.hold(nap, false);
                }
            }
        }
        // Sleep until a connection is there and the quota allows it.
        let _s = Sleeper::new(g);
        let err = sk.wait(&mut timeo, || {
            if sk.accept_queue_empty() {
                return u64::MAX;
            }
            if !rec.meter.governed_by(g) {
                return 0;
            }
            g.accept_nap(&rec.meter).unwrap_or(0)
        });
        if err != 0 {
            break err;
        }
    };
    // Restoring the caller's flags.
    call.set_nonblock(nonblock);
    err
}

/// The wrapped `accept`: the group's quota if the port is in an accept group, the
/// protocol's, then the meter's measurements.
///
/// # Safety
///
/// Called by the socket layer with its usual guarantees for `proto_ops::accept`.
unsafe extern "C" fn accept<const V6: bool>(
    sock: *mut bindings::socket,
    newsock: *mut bindings::socket,
    arg: *mut bindings::proto_accept_arg,
) -> c_int {
    let _in = Inflight::enter();
    // SAFETY: `orig` is a protocol table, valid forever.
    let Some(f) = (unsafe { (*orig(V6)).accept }) else {
        return EOPNOTSUPP.to_errno();
    };
    // SAFETY: `sock` is the socket of this call of the current task on our table of
    // family `V6`, valid for the call.
    let sk = unsafe { Sock::new(sock, V6) };
    let gov = sk.and_then(|s| s.governed(false));
    let err = match (sk, &gov, NonNull::new(arg)) {
        (
            Some(sk),
            Some(Governed {
                rec,
                group: Some(g),
            }),
            Some(arg),
        ) => {
            // INVARIANT: the arguments of this call and the protocol's function for them.
            let call = AcceptCall {
                sock: sk,
                newsock,
                arg,
                f,
            };
            governed_accept(&**g, rec, &call)
        }
        // SAFETY: our caller's guarantees are those of the protocol's `accept`.
        _ => unsafe { f(sock, newsock, arg) },
    };
    if err != 0 {
        return err;
    }
    let data_listener = gov.as_ref().filter(|g| g.rec.data).map(|g| g.rec.clone());
    let feeder = gov
        .as_ref()
        .filter(|g| !g.rec.data)
        .and_then(|g| g.rec.meter.feeder());
    let from = gov.map(|g| (g.rec.meter.clone(), g.rec.data));
    // SAFETY: `newsock` is the new socket, not yet visible to anyone else, with a sock.
    unsafe { Meter::adopt(from, newsock, V6) };
    // A prioritized port releases its next connection.
    if let Some(f) = feeder {
        f.accepted();
    }
    // An FTP data listener was in the groups for this one data connection, which stays
    // governed until it closes; the listener itself leaves now.
    if let Some(rec) = data_listener {
        rec.meter.data_listener_leaves(&rec);
    }
    0
}

/// The wrapped `release`: takes the record off, then the protocol's.
///
/// # Safety
///
/// Called by the socket layer with its usual guarantees for `proto_ops::release`.
unsafe extern "C" fn release<const V6: bool>(sock: *mut bindings::socket) -> c_int {
    let _in = Inflight::enter();
    // SAFETY: `sock` is the socket of this call on our table of family `V6`.
    if let Some(sk) = unsafe { Sock::new(sock, V6) } {
        sk.detach(false);
    }
    // SAFETY: `orig` is a protocol table, valid forever.
    match unsafe { (*orig(V6)).release } {
        // SAFETY: our caller's guarantees are those of the protocol's `release`.
        Some(f) => unsafe { f(sock) },
        None => 0,
    }
}

/// The wrapped `setsockopt`. An option that replaces the socket's operations (a ULP such
/// as kTLS, or `IPV6_ADDRFORM`) first takes the socket out of its meter, with the
/// protocol's operations back: the replacement must not start from our table (kTLS
/// copies the first table it sees into its own global tables, for every kTLS socket of
/// the host), and a socket whose operations were replaced would never run our `release`.
///
/// # Safety
///
/// Called by the socket layer with its usual guarantees for `proto_ops::setsockopt`.
unsafe extern "C" fn setsockopt<const V6: bool>(
    sock: *mut bindings::socket,
    level: c_int,
    optname: c_int,
    optval: bindings::sockptr_t,
    optlen: c_uint,
) -> c_int {
    let _in = Inflight::enter();
    // SAFETY: `orig` is a protocol table, valid forever.
    let Some(f) = (unsafe { (*orig(V6)).setsockopt }) else {
        return EOPNOTSUPP.to_errno();
    };
    // SAFETY: a pure function of its arguments.
    if unsafe { shim::oq_replaces_ops(V6, level, optname) } {
        // SAFETY: `sock` is the socket of this call on our table of family `V6`.
        if let Some(sk) = unsafe { Sock::new(sock, V6) } {
            sk.detach(true);
        }
    }
    // SAFETY: our caller's guarantees are those of the protocol's `setsockopt`.
    unsafe { f(sock, level, optname, optval, optlen) }
}

/// `sendmsg` on a connection of an output group: sends what the group's quota allows,
/// in pieces, sleeping for more (blocking sockets) or stopping short (non-blocking).
/// Counts the bytes sent in the connection's record.
fn governed_send(g: &dyn Governor, rec: &Tracked, call: &SendCall<'_>) -> c_int {
    let nonblock = call.dontwait();
    let mut timeo = call.sock.timeo(true, nonblock);
    let mut sent: c_int = 0;
    loop {
        let left = call.left();
        if left == 0 && sent > 0 {
            return sent;
        }
        let want = (left as u64).min(SEND_CHUNK);
        let verdict = if rec.meter.governed_by(g) {
            g.send_take(want.max(1))
        } else {
            Verdict::Free
        };
        match verdict {
            Verdict::Free => {
                let n = call.send(left);
                rec.tx.add(u64::try_from(n).unwrap_or(0));
                return if n < 0 && sent > 0 { sent } else { sent + n };
            }
            Verdict::Go(n) => {
                let n = n as usize;
                let r = call.send_at_most(n);
                let done = u64::try_from(r).unwrap_or(0);
                g.send_done(&rec.meter, n as u64, done);
                // Counted piece by piece: a long governed send shows in the meter as it
                // goes.
                rec.tx.add(done);
                if r < 0 {
                    return if sent > 0 { sent } else { r };
                }
                sent += r;
                if (r as usize) < n || left == 0 {
                    return sent;
                }
            }
            Verdict::Wait(nap) => {
                if nonblock {
                    rec.throttled.store(true, Relaxed);
                    g.hold(nap, true);
                    return if sent > 0 { sent } else { EAGAIN.to_errno() };
                }
                g.hold(nap, false);
                rec.throttled.store(true, Relaxed);
                let _s = Sleeper::new(g);
                let err = call.sock.wait(&mut timeo, || {
                    if rec.meter.governed_by(g) {
                        g.send_nap().unwrap_or(0)
                    } else {
                        0
                    }
                });
                if err != 0 {
                    return if sent > 0 { sent } else { err };
                }
            }
        }
    }
}

/// Bytes an output group lets through per call of the protocol's `sendmsg`: small
/// enough that one call cannot run far ahead of the others.
const SEND_CHUNK: u64 = 64 * 1024;

/// Looks at the start of a server's write on an FTP control connection, the first write
/// after the client's `PASV` or `EPSV`: a passive-mode reply makes the announced data
/// port join the connection's groups.
fn watch_ftp(rec: &Tracked, call: &SendCall<'_>) {
    let mut buf = [0u8; ftp::PEEK];
    let n = call.peek(&mut buf);
    if let Some(port) = ftp::reply_port(&buf[..n]) {
        if let Some(net) = call.sock.net() {
            rec.meter.ftp_join(net, port, call.sock.sk);
        }
    }
}

/// The wrapped `sendmsg` (also reached by `sendfile` and `splice` to a socket).
///
/// # Safety
///
/// Called by the socket layer with its usual guarantees for `proto_ops::sendmsg`.
unsafe extern "C" fn sendmsg<const V6: bool>(
    sock: *mut bindings::socket,
    msg: *mut bindings::msghdr,
    len: usize,
) -> c_int {
    let _in = Inflight::enter();
    // SAFETY: `orig` is a protocol table, valid forever.
    let Some(f) = (unsafe { (*orig(V6)).sendmsg }) else {
        return EOPNOTSUPP.to_errno();
    };
    // SAFETY: `sock` is the socket of this call of the current task on our table of
    // family `V6`, valid for the call.
    let (Some(sk), Some(m)) = (unsafe { Sock::new(sock, V6) }, NonNull::new(msg)) else {
        // SAFETY: our caller's guarantees are those of the protocol's `sendmsg`.
        return unsafe { f(sock, msg, len) };
    };
    // INVARIANT: the message of this call and the protocol's function for it.
    let call = SendCall {
        sock: sk,
        msg: m,
        f,
    };
    if !any_governor() {
        // No group anywhere: nothing governs the send nor watches FTP replies, so only
        // the bytes are counted (without taking a reference on the record).
        let n = call.send(len);
        if let Ok(n @ 1..) = u64::try_from(n) {
            sk.with_record(|r| r.tx.add(n));
        }
        return n;
    }
    let Some(gov) = sk.governed(true) else {
        return call.send(len);
    };
    let rec = &gov.rec;
    // Exactly one write answers a passive command: whatever it is, it disarms.
    if len > 0 && rec.ftp_armed.load(Relaxed) && rec.ftp_armed.xchg(false, Relaxed) {
        if rec.meter.watches_ftp() {
            watch_ftp(rec, &call);
        }
    }
    match &gov.group {
        // Counts the bytes it sends.
        Some(g) if len > 0 => governed_send(&**g, rec, &call),
        _ => {
            let n = call.send(len);
            if let Ok(n @ 1..) = u64::try_from(n) {
                rec.tx.add(n);
            }
            n
        }
    }
}

/// The wrapped `poll`: a listener out of accept quota is not readable, a connection
/// out of output quota not writable, until the group's timer wakes them.
///
/// # Safety
///
/// Called by the socket layer with its usual guarantees for `proto_ops::poll`.
unsafe extern "C" fn poll<const V6: bool>(
    file: *mut bindings::file,
    sock: *mut bindings::socket,
    wait: *mut bindings::poll_table_struct,
) -> bindings::__poll_t {
    let _in = Inflight::enter();
    // SAFETY: `orig` is a protocol table, valid forever.
    let Some(f) = (unsafe { (*orig(V6)).poll }) else {
        return 0;
    };
    // SAFETY: our caller's guarantees are those of the protocol's `poll`.
    let mask = unsafe { f(file, sock, wait) };
    if !any_governor() {
        return mask;
    }
    // SAFETY: `sock` is the socket of this call of the current task on our table of
    // family `V6`, valid for the call.
    match unsafe { Sock::new(sock, V6) } {
        Some(sk) => governed_poll(sk, mask),
        None => mask,
    }
}

/// A listener out of accept quota is not readable, a connection out of output quota not
/// writable: takes those bits out of the protocol's `mask` and arms the group's timer,
/// which wakes the poller when the quota is back.
fn governed_poll(sk: Sock<'_>, mut mask: bindings::__poll_t) -> bindings::__poll_t {
    let Some(gov) = sk.record() else {
        return mask;
    };
    let output = !gov.listener;
    // SAFETY: a constant of the kernel's headers.
    let bits = unsafe { shim::oq_poll_bits(output) };
    if mask & bits == 0 || (gov.listener && gov.data) {
        return mask;
    }
    if let Some(g) = gov.meter.group(output) {
        let nap = if output {
            g.send_nap()
        } else {
            g.accept_nap(&gov.meter)
        };
        if let Some(nap) = nap {
            mask &= !bits;
            gov.throttled.store(true, Relaxed);
            g.arm(nap, true);
        }
    }
    mask
}

/// The wrapped `recvmsg`.
///
/// # Safety
///
/// Called by the socket layer with its usual guarantees for `proto_ops::recvmsg`.
unsafe extern "C" fn recvmsg<const V6: bool>(
    sock: *mut bindings::socket,
    msg: *mut bindings::msghdr,
    len: usize,
    flags: c_int,
) -> c_int {
    let _in = Inflight::enter();
    // SAFETY: `orig` is a protocol table, valid forever.
    let Some(f) = (unsafe { (*orig(V6)).recvmsg }) else {
        return EOPNOTSUPP.to_errno();
    };
    // Peeked data is counted (and looked at) when it is read.
    let read = flags & bindings::MSG_PEEK as c_int == 0;
    // Where the data will go, kept to read the start of it back: an FTP client's
    // command (no group anywhere: nothing watches FTP).
    // SAFETY: `msg` is valid for the call; the iterator is plain data, copied.
    let before = (read && any_governor())
        .then(|| unsafe { core::ptr::read(core::ptr::addr_of!((*msg).msg_iter)) });
    // SAFETY: our caller's guarantees are those of the protocol's `recvmsg`.
    let n = unsafe { f(sock, msg, len, flags) };
    let Ok(got @ 1..) = u64::try_from(n) else {
        return n;
    };
    if !read {
        return n;
    }
    // SAFETY: `sock` is the socket of this call of the current task on our table of
    // family `V6`, valid for the call.
    let Some(sk) = (unsafe { Sock::new(sock, V6) }) else {
        return n;
    };
    match before {
        None => {
            sk.with_record(|r| r.rx.add(got));
        }
        Some(before) => {
            if let Some(rec) = sk.record() {
                rec.rx.add(got);
                // SAFETY: `before` is the message's iterator as it was before the call,
                // which wrote `got` bytes through it; a process-context system call.
                unsafe { watch_command(&rec, &before, got) };
            }
        }
    }
    n
}

/// Looks at the start of what a server just read on a connection of an FTP control
/// port: a `PASV` or `EPSV` command arms the connection for the server's reply.
///
/// # Safety
///
/// `before` must be the iterator of a `recvmsg` call of the current task as it was before
/// the call, which delivered `got` bytes through it; process context, no lock held.
unsafe fn watch_command(rec: &Tracked, before: &bindings::iov_iter, got: u64) {
    if rec.listener || rec.data || !rec.meter.watches_ftp() {
        return;
    }
    let mut buf = [0u8; ftp::COMMAND_PEEK];
    // SAFETY: `before` describes the caller's buffer (caller); `buf` has room for what we
    // ask.
    let n = unsafe { shim::oq_iter_read_back(before, buf.as_mut_ptr().cast(), buf.len()) };
    let n = n
        .min(buf.len())
        .min(usize::try_from(got).unwrap_or(usize::MAX));
    if ftp::passive_command(&buf[..n]) {
        rec.ftp_armed.store(true, Relaxed);
    }
}

/// The wrapped `splice_read` (`splice` from a socket).
///
/// # Safety
///
/// Called by the socket layer with its usual guarantees for `proto_ops::splice_read`.
unsafe extern "C" fn splice_read<const V6: bool>(
    sock: *mut bindings::socket,
    ppos: *mut bindings::loff_t,
    pipe: *mut bindings::pipe_inode_info,
    len: usize,
    flags: c_uint,
) -> isize {
    let _in = Inflight::enter();
    // SAFETY: `orig` is a protocol table, valid forever.
    let Some(f) = (unsafe { (*orig(V6)).splice_read }) else {
        return EOPNOTSUPP.to_errno() as isize;
    };
    // SAFETY: our caller's guarantees are those of the protocol's `splice_read`.
    let n = unsafe { f(sock, ppos, pipe, len, flags) };
    if let Ok(n @ 1..) = u64::try_from(n) {
        // SAFETY: `sock` is the socket of this call of the current task on our table of
        // family `V6`, valid for the call.
        if let Some(sk) = unsafe { Sock::new(sock, V6) } {
            sk.with_record(|r| r.rx.add(n));
        }
    }
    n
}

/// A wrapped socket: a listener of a metered port, or a connection accepted from one.
///
/// # Invariants
///
/// `sk` holds a reference (taken in `new`, dropped in `drop`). While the record is the
/// user data of `sk`, it holds one reference to itself (from `Arc::into_raw`) and the
/// socket has the wrapped operations of family `v6`.
pub(crate) struct Tracked {
    sk: NonNull<bindings::sock>,
    meter: Arc<Meter>,
    v6: bool,
    listener: bool,
    /// An FTP data listener that joined its control port's groups, or a data connection
    /// accepted from one: it counts against the groups' output quota and in the bytes,
    /// but not as a connection of the port.
    data: bool,
    /// A group held it back: its timer wakes the socket.
    throttled: Atomic<bool>,
    /// A connection of an FTP control port whose client sent `PASV` or `EPSV`: the
    /// server's next write is its reply, and is parsed.
    ftp_armed: Atomic<bool>,
    /// When the record was made ([`now_ns`]): an FTP data listener leaves
    /// its groups once it is older than the data timeout.
    since_ns: u64,
    /// Position in the meter's list; changed under the meter's lock.
    slot: Atomic<usize>,
    /// Bytes the server read from this connection.
    rx: Sum,
    /// Bytes the server wrote to this connection.
    tx: Sum,
}

// SAFETY: `sk` is a refcounted kernel socket, used only through functions that lock.
unsafe impl Send for Tracked {}
// SAFETY: as above; the counters are atomics.
unsafe impl Sync for Tracked {}

impl Tracked {
    /// A record for `sk`, taking a reference on it.
    ///
    /// # Safety
    ///
    /// `sk` must be a valid socket.
    unsafe fn new(
        sk: NonNull<bindings::sock>,
        meter: Arc<Meter>,
        listener: bool,
        data: bool,
    ) -> Result<Arc<Self>> {
        // SAFETY: `sk` is valid (caller).
        let v6 = unsafe { shim::oq_sk_family(sk.as_ptr()) } == bindings::AF_INET6 as u16;
        let rec = Arc::new(
            Self {
                sk,
                meter,
                v6,
                listener,
                data,
                throttled: Atomic::new(false),
                ftp_armed: Atomic::new(false),
                since_ns: now_ns(),
                slot: Atomic::new(usize::MAX),
                rx: Sum::new(),
                tx: Sum::new(),
            },
            // Made by the task that accepts (or owns the listener): its memory cgroup
            // pays, as it pays for the socket.
            kernel::alloc::flags::GFP_KERNEL_ACCOUNT,
        )?;
        // SAFETY: `sk` is valid (caller).
        unsafe { shim::oq_sock_hold(sk.as_ptr()) };
        // INVARIANT: the reference just taken.
        Ok(rec)
    }

    /// Installs `self` and the wrapped operations on the socket, if it has operations
    /// `expect` and no user data.
    fn wrap(self: &Arc<Self>, expect: *const bindings::proto_ops) -> bool {
        let raw = Arc::into_raw(self.clone());
        // SAFETY: `sk` is valid (type invariant); on success the user data holds the
        // reference `raw` (type invariant).
        if unsafe { shim::oq_sock_wrap(self.sk.as_ptr(), expect, ours(self.v6), raw.cast()) } {
            EVER_WRAPPED.store(true, Relaxed);
            true
        } else {
            // SAFETY: not installed: take back the reference made above.
            drop(unsafe { Arc::from_raw(raw) });
            false
        }
    }

    /// Takes `self` and the wrapped operations off the socket if they are still there.
    fn unwrap(self: &Arc<Self>) {
        let raw = Arc::as_ptr(self);
        // SAFETY: `sk` is valid (type invariant); `raw` is only compared.
        if unsafe {
            shim::oq_sock_unwrap(self.sk.as_ptr(), raw.cast(), ours(self.v6), orig(self.v6))
        } {
            // SAFETY: the user data held a reference from `Arc::into_raw`.
            drop(unsafe { Arc::from_raw(raw) });
        }
    }

    /// Makes the tasks blocked in a call on this socket restart it.
    fn kick(&self) {
        // SAFETY: `sk` is valid (type invariant).
        unsafe { shim::oq_kick_waiters(self.sk.as_ptr()) };
    }

    /// Wakes the tasks sleeping or polling on the socket (its group's quota is back).
    fn wake(&self, out: bool) {
        // SAFETY: `sk` is valid (type invariant).
        unsafe { shim::oq_sk_wake(self.sk.as_ptr(), out) };
    }

    /// Connections in the accept queue (listeners).
    fn backlog(&self) -> u64 {
        // SAFETY: `sk` is valid (type invariant).
        u64::from(unsafe { shim::oq_sk_ack_backlog(self.sk.as_ptr()) })
    }

    /// How long the head of the accept queue has waited, ns (listeners; 0 if none waits).
    fn oldest_ns(&self) -> u64 {
        // SAFETY: `sk` is valid (type invariant) and a TCP socket, as every wrapped socket
        // is (the wrapper is TCP's `proto_ops`), so it has an accept queue (empty unless
        // it listens).
        unsafe { shim::oq_queue_oldest_ns(self.sk.as_ptr()) }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // SAFETY: the reference taken in `new` (type invariant).
        unsafe { shim::oq_sock_put(self.sk.as_ptr()) };
    }
}

/// What a meter's lock protects.
struct MeterInner {
    /// The meter was deleted: it tracks nothing more.
    dead: bool,
    /// Wrapped sockets, each at the position its `slot` says.
    tracked: KVec<Arc<Tracked>>,
    /// The listeners of the port among them (not FTP data listeners), at most
    /// `MAX_METER_LISTENERS`: what [`Meter::busy`] looks at on every accept of a ratio
    /// group, without walking the connections.
    ports: KVec<Arc<Tracked>>,
    /// How many of them are FTP data listeners.
    data_listeners: usize,
    /// Bytes of connections closed since.
    rx_closed: u64,
    /// Bytes of connections closed since.
    tx_closed: u64,
}

impl MeterInner {
    /// Takes `rec` off the lists; false if it was not on them (any more).
    fn remove(&mut self, rec: &Tracked) -> bool {
        let i = rec.slot.load(Relaxed);
        if i >= self.tracked.len() || !core::ptr::eq(&*self.tracked[i], rec) {
            return false;
        }
        let last = self.tracked.len() - 1;
        self.tracked.swap(i, last);
        self.tracked[i].slot.store(i, Relaxed);
        rec.slot.store(usize::MAX, Relaxed);
        drop(self.tracked.pop());
        if rec.listener && rec.data {
            self.data_listeners -= 1;
        } else if rec.listener {
            if let Some(j) = self.ports.iter().position(|p| core::ptr::eq(&**p, rec)) {
                let last = self.ports.len() - 1;
                self.ports.swap(j, last);
                drop(self.ports.pop());
            }
        } else {
            self.rx_closed += rec.rx.get();
            self.tx_closed += rec.tx.get();
        }
        true
    }
}

/// The sensors of one listening port of a namespace.
#[pin_data]
pub(crate) struct Meter {
    /// The port.
    pub(crate) port: u16,
    /// Bits of [`meter_flags`].
    flags: Atomic<u32>,
    accepted: Counter,
    delay_ns: Sum,
    hist: [Counter; hist::BUCKETS],
    #[pin]
    inner: Mutex<MeterInner>,
    /// The socket groups of the port: governing accept, and governing output.
    #[pin]
    groups: SpinLock<[Option<Arc<dyn Governor>>; 2]>,
    /// Bit `1 << slot` of `groups`: the port was attached to that group as an FTP control
    /// port. Written under the lock of `groups`.
    ftp_ports: Atomic<u32>,
    /// Told of every connection accepted from the port (a prioritized queue).
    #[pin]
    feeder: SpinLock<Option<Arc<dyn Feeder>>>,
}

/// What wants to know when a server accepted a connection from a metered port: a
/// prioritized port's queue, which then releases the next connection into the server's
/// queue. The sensors own this trait and `qos_prio` implements it, as for [`Governor`].
pub(crate) trait Feeder: Send + Sync {
    /// A connection was accepted from the port (process context, no lock held).
    fn accepted(&self);
}

/// A snapshot of a meter's readings.
pub(crate) struct Reading {
    /// Bits of [`meter_flags`].
    pub(crate) flags: u32,
    /// `(attribute, value)` for every [`meter_stat`] attribute.
    pub(crate) stats: [(u16, u64); meter_stat::MAX as usize],
    /// The delay histogram.
    pub(crate) hist: [u64; hist::BUCKETS],
}

impl Meter {
    /// A new meter of `port`, tracking nothing yet.
    pub(crate) fn new(port: u16, flags: u32) -> Result<Arc<Self>> {
        if !AVAILABLE.load(Relaxed) {
            return Err(EOPNOTSUPP);
        }
        Arc::pin_init(
            pin_init!(Self {
                port,
                flags: Atomic::new(flags),
                accepted: Counter::new(),
                delay_ns: Sum::new(),
                hist: [const { Counter::new() }; hist::BUCKETS],
                inner <- kernel::new_mutex!(MeterInner {
                    dead: false,
                    tracked: KVec::new(),
                    ports: KVec::new(),
                    data_listeners: 0,
                    rx_closed: 0,
                    tx_closed: 0,
                }),
                groups <- kernel::new_spinlock!([None, None]),
                ftp_ports: Atomic::new(0),
                feeder <- kernel::new_spinlock!(None),
            }),
            GFP_KERNEL,
        )
    }

    /// Bits of [`meter_flags`].
    pub(crate) fn flags(&self) -> u32 {
        self.flags.load(Relaxed)
    }

    /// Adds bits of [`meter_flags`].
    pub(crate) fn add_flags(&self, flags: u32) {
        self.flags.store(self.flags() | flags, Relaxed);
    }

    /// Removes bits of [`meter_flags`].
    pub(crate) fn clear_flags(&self, flags: u32) {
        self.flags.store(self.flags() & !flags, Relaxed);
    }

    /// Sets (or with `None` removes) what is told of the port's accepts.
    pub(crate) fn set_feeder(&self, f: Option<Arc<dyn Feeder>>) {
        let old = core::mem::replace(&mut *self.feeder.lock(), f);
        // Dropped outside the lock.
        drop(old);
    }

    /// What is told of the port's accepts, if anything.
    fn feeder(&self) -> Option<Arc<dyn Feeder>> {
        self.feeder.lock().clone()
    }

    /// The group governing the port's output (`output`) or its `accept()`.
    pub(crate) fn group(&self, output: bool) -> Option<Arc<dyn Governor>> {
        self.groups.lock()[usize::from(output)].clone()
    }

    /// Puts the port in `g` (its kind decides the slot), as an FTP control port if `ftp`;
    /// fails if the slot is taken.
    pub(crate) fn join(&self, g: Arc<dyn Governor>, ftp: bool) -> bool {
        let mut slots = self.groups.lock();
        let i = usize::from(g.is_output());
        if slots[i].is_some() {
            return false;
        }
        slots[i] = Some(g);
        let bit = 1u32 << i;
        let mask = self.ftp_ports.load(Relaxed) & !bit;
        self.ftp_ports
            .store(if ftp { mask | bit } else { mask }, Relaxed);
        drop(slots);
        self.add_flags(meter_flags::GROUPED);
        true
    }

    /// Takes the port out of `g`.
    pub(crate) fn leave(&self, g: &dyn Governor) {
        let mut slots = self.groups.lock();
        let i = usize::from(g.is_output());
        if slots[i]
            .as_deref()
            .is_some_and(|s| core::ptr::addr_eq(s, g))
        {
            slots[i] = None;
            self.ftp_ports
                .store(self.ftp_ports.load(Relaxed) & !(1u32 << i), Relaxed);
        }
        let grouped = slots.iter().any(Option::is_some);
        drop(slots);
        if !grouped {
            self.clear_flags(meter_flags::GROUPED);
        }
    }

    /// Whether `g` still governs the port (a port detached from a group meanwhile is
    /// free at once, even for a caller that found it grouped and sleeps on its quota).
    fn governed_by(&self, g: &dyn Governor) -> bool {
        self.groups.lock()[usize::from(g.is_output())]
            .as_deref()
            .is_some_and(|s| core::ptr::addr_eq(s, g))
    }

    /// Whether the port is in a group.
    pub(crate) fn grouped(&self) -> bool {
        self.groups.lock().iter().any(Option::is_some)
    }

    /// Whether the port is an FTP control port: it was attached to a group as one, or a
    /// group of the port has [`crate::abi::group_flags::FTP`].
    fn watches_ftp(&self) -> bool {
        self.ftp_ports.load(Relaxed) != 0 || self.groups.lock().iter().flatten().any(|g| g.ftp())
    }

    /// Whether connections wait in the port's accept queues.
    pub(crate) fn busy(&self) -> bool {
        self.inner.lock().ports.iter().any(|r| r.backlog() > 0)
    }

    /// Wakes the callers a group may hold back on this port: its listeners, or
    /// (`output`) its connections that were throttled.
    pub(crate) fn wake(&self, output: bool) {
        let inner = self.inner.lock();
        for rec in inner.tracked.iter() {
            if output != rec.listener && (rec.throttled.xchg(false, Relaxed) || !output) {
                rec.wake(output);
            }
        }
    }

    /// An FTP server announced data port `port` on its control connection `ctl`: the
    /// port's listeners of the same owner (a server cannot pull another user's listener
    /// into its group) that are not metered yet join this port's groups (their
    /// connections are counted here, as data).
    fn ftp_join(self: &Arc<Self>, net: NetRef, port: u16, ctl: NonNull<bindings::sock>) {
        let mut sks = [core::ptr::null_mut(); 4];
        // SAFETY: `net` is live; `sks` has room for the number of sockets we pass.
        let n = unsafe {
            shim::oq_port_listeners(net.0.as_ptr(), port, sks.as_mut_ptr(), sks.len() as i32)
        };
        let mut joined = false;
        for &sk in sks.iter().take(n.max(0) as usize) {
            let Some(sk) = NonNull::new(sk) else { continue };
            // SAFETY: `oq_port_listeners` took a reference on `sk`; `ctl` is the sock of a
            // socket in a system call.
            let free = unsafe {
                !shim::oq_sk_has_user_data(sk.as_ptr())
                    && shim::oq_sk_same_owner(sk.as_ptr(), ctl.as_ptr())
            };
            if free {
                // SAFETY: as above.
                if let Ok(rec) = unsafe { Tracked::new(sk, self.clone(), true, true) } {
                    joined |= self.track(&rec);
                }
            }
            // SAFETY: the reference `oq_port_listeners` took.
            unsafe { shim::oq_sock_put(sk.as_ptr()) };
        }
        if joined {
            for g in self.groups.lock().iter().flatten() {
                g.ftp_joined();
            }
        }
    }

    /// The FTP data listener `rec` leaves the port's groups: its data connection was
    /// accepted (and is tracked on its own), or it waited longer than the data timeout.
    /// Its socket gets the protocol's operations back, and tasks blocked in its
    /// `accept()` restart the call on them.
    fn data_listener_leaves(&self, rec: &Arc<Tracked>) {
        {
            let mut inner = self.inner.lock();
            // A dead meter's `shutdown` unwraps everything it tracked.
            if inner.dead || !inner.remove(rec) {
                return;
            }
        }
        rec.unwrap();
        rec.kick();
    }

    /// Data listeners that waited longer than the data timeout leave the groups.
    fn expire_data_listeners(&self) {
        // SAFETY: reads a module parameter.
        let ms = match unsafe { shim::oq_ftp_data_timeout_ms() } {
            0 => ftp::DATA_TIMEOUT_MS,
            ms => ms,
        };
        let limit = u64::from(ms) * 1_000_000;
        let now = now_ns();
        let mut old = KVec::new();
        {
            let inner = self.inner.lock();
            if inner.dead || inner.data_listeners == 0 {
                return;
            }
            for rec in inner.tracked.iter() {
                if rec.listener
                    && rec.data
                    && now.saturating_sub(rec.since_ns) >= limit
                    && old.push(rec.clone(), GFP_KERNEL).is_err()
                {
                    break;
                }
            }
        }
        for rec in old.iter() {
            self.data_listener_leaves(rec);
        }
    }

    /// Wraps the listeners of the port in `net` that are not wrapped yet, and makes the
    /// tasks blocked in their `accept()` restart it through the wrapper. FTP data
    /// listeners past the data timeout leave.
    pub(crate) fn rescan(self: &Arc<Self>, net: NetRef) {
        self.expire_data_listeners();
        let mut sks = [core::ptr::null_mut(); limits::MAX_METER_LISTENERS];
        // SAFETY: `net` is live; `sks` has room for the number of sockets we pass.
        let n = unsafe {
            shim::oq_port_listeners(
                net.0.as_ptr(),
                self.port,
                sks.as_mut_ptr(),
                sks.len() as i32,
            )
        };
        for &sk in sks.iter().take(n.max(0) as usize) {
            let Some(sk) = NonNull::new(sk) else { continue };
            // SAFETY: `oq_port_listeners` took a reference on `sk`.
            if !unsafe { shim::oq_sk_has_user_data(sk.as_ptr()) } {
                // SAFETY: as above.
                if let Ok(rec) = unsafe { Tracked::new(sk, self.clone(), true, false) } {
                    if self.track(&rec) {
                        rec.kick();
                    }
                }
            }
            // SAFETY: the reference `oq_port_listeners` took.
            unsafe { shim::oq_sock_put(sk.as_ptr()) };
        }
    }

    /// Lists `rec` and wraps its socket. Listeners must have the protocol's operations;
    /// accepted sockets got ours from their listener.
    fn track(&self, rec: &Arc<Tracked>) -> bool {
        let mut inner = self.inner.lock();
        let full = match (rec.listener, rec.data) {
            (true, false) => inner.ports.len() >= limits::MAX_METER_LISTENERS,
            (true, true) => inner.data_listeners >= limits::MAX_FTP_DATA,
            _ => false,
        };
        if inner.dead || full {
            return false;
        }
        let port_listener = rec.listener && !rec.data;
        if port_listener && inner.ports.reserve(1, GFP_KERNEL).is_err() {
            return false;
        }
        let slot = inner.tracked.len();
        if inner
            .tracked
            .push(rec.clone(), kernel::alloc::flags::GFP_KERNEL_ACCOUNT)
            .is_err()
        {
            return false;
        }
        rec.slot.store(slot, Relaxed);
        let expect = if rec.listener {
            orig(rec.v6)
        } else {
            ours(rec.v6)
        };
        if !rec.wrap(expect) {
            drop(inner.tracked.pop());
            return false;
        }
        if rec.listener && rec.data {
            inner.data_listeners += 1;
        } else if rec.listener {
            // Cannot fail: reserved above.
            let _ = inner.ports.push(rec.clone(), GFP_KERNEL);
        }
        true
    }

    /// Counts the connection just accepted on `newsock` and tracks it, or, if its
    /// listener is no longer metered (`from` is `None`) or the meter was deleted, gives
    /// it the protocol's operations back. `from`: the listener's meter, and whether the
    /// listener is an FTP data listener (its connections are not counted as accepted).
    ///
    /// # Safety
    ///
    /// `newsock` must be a socket just accepted, with a sock, not yet installed in a file
    /// (so nothing else uses it), with our operations of family `v6`.
    unsafe fn adopt(from: Option<(Arc<Meter>, bool)>, newsock: *mut bindings::socket, v6: bool) {
        // SAFETY: `newsock` is valid (caller).
        let sk = unsafe { sk_of(newsock) };
        let tracked = match (from, sk) {
            (Some((m, data)), Some(sk)) => {
                if !data {
                    // SAFETY: `sk` is the accepted socket, valid.
                    let ns = unsafe { shim::oq_accept_delay_ns(sk.as_ptr()) };
                    m.accepted.inc();
                    m.delay_ns.add(ns);
                    m.hist[hist::bucket(ns / 1000)].inc();
                }
                // SAFETY: `sk` is valid.
                match unsafe { Tracked::new(sk, m.clone(), false, data) } {
                    Ok(rec) => m.track(&rec),
                    Err(_) => false,
                }
            }
            _ => false,
        };
        if !tracked {
            // SAFETY: `newsock` is not shared yet (caller).
            unsafe { shim::oq_socket_set_ops(newsock, orig(v6)) };
        }
    }

    /// Forgets `rec`, whose socket is being released; its bytes join the totals.
    fn forget(&self, rec: &Tracked) {
        let mut inner = self.inner.lock();
        if !inner.dead {
            inner.remove(rec);
        }
    }

    /// Stops metering: gives every socket its operations back and makes the tasks
    /// blocked in a wrapper restart their call. Returns the records, which keep their
    /// sockets referenced (module unload kicks them until every wrapper is left).
    pub(crate) fn shutdown(&self) -> KVec<Arc<Tracked>> {
        self.set_feeder(None);
        let list = {
            let mut inner = self.inner.lock();
            inner.dead = true;
            inner.data_listeners = 0;
            inner.ports.clear();
            core::mem::take(&mut inner.tracked)
        };
        for rec in list.iter() {
            rec.unwrap();
        }
        for rec in list.iter() {
            rec.kick();
        }
        list
    }

    /// The current readings.
    pub(crate) fn read(&self) -> Reading {
        let (waiting, oldest, open, listeners, rx, tx) = {
            let inner = self.inner.lock();
            let (mut waiting, mut rx, mut tx) = (0, inner.rx_closed, inner.tx_closed);
            let (mut open, mut oldest) = (0, 0);
            for rec in inner.tracked.iter() {
                if rec.listener {
                    if !rec.data {
                        waiting += rec.backlog();
                        oldest = oldest.max(rec.oldest_ns());
                    }
                } else {
                    rx += rec.rx.get();
                    tx += rec.tx.get();
                    open += u64::from(!rec.data);
                }
            }
            (waiting, oldest, open, inner.ports.len() as u64, rx, tx)
        };
        let mut hist = [0u64; hist::BUCKETS];
        for (h, c) in hist.iter_mut().zip(self.hist.iter()) {
            *h = c.get();
        }
        Reading {
            flags: self.flags(),
            stats: [
                (meter_stat::WAITING, waiting),
                (meter_stat::ACCEPTED, self.accepted.get()),
                (meter_stat::DELAY_NS, self.delay_ns.get()),
                (meter_stat::RX_BYTES, rx),
                (meter_stat::TX_BYTES, tx),
                (meter_stat::OPEN, open),
                (meter_stat::LISTENERS, listeners),
                (meter_stat::OLDEST_NS, oldest),
            ],
            hist,
        }
    }
}

/// Flags of a meter created for a rule's outgoing port.
pub(crate) const AUTO: u32 = meter_flags::AUTO;

/// The rescan: wraps the listeners that appeared on metered ports after their meter.
///
/// The meters belong to the per-namespace store, above the sensors; the store registers
/// how to walk them ([`Sensors::register`]) and the sensors only run that walk from their
/// timer.
///
/// # Invariants
///
/// `walk` is written once, by [`Sensors::register`] before `timer` is initialized, and
/// only read after (by the timer's runs, which `EVER_REGISTERED` allows to be queued).
struct Rescan {
    timer: Timer<Rescan>,
    walk: core::cell::UnsafeCell<fn() -> bool>,
    last_kick: Atomic<u64>,
}

// SAFETY: `walk` is written once before any other access (type invariant); the rest is
// the timer and an atomic.
unsafe impl Sync for Rescan {}

impl_has_timer!(impl HasTimer for Rescan { self.timer });

impl TimerItem for Rescan {
    type Ref = &'static Rescan;

    fn run(this: &'static Rescan) {
        // SAFETY: written before the timer could be queued (type invariant).
        let walk = unsafe { *this.walk.get() };
        if walk() {
            schedule_rescan();
        }
    }
}

/// A walk that finds no meter (before registration).
fn no_meters() -> bool {
    false
}

static RESCAN: Rescan = Rescan {
    timer: Timer::uninit(),
    walk: core::cell::UnsafeCell::new(no_meters),
    last_kick: Atomic::new(0),
};

/// Asks for a rescan of every meter soon (at most ten times a second). Called by the
/// classifier, in any context, when it moves a connection to a listener that is not
/// wrapped: a server may have started listening on a metered port.
pub(crate) fn kick_rescan() {
    if !EVER_REGISTERED.load(Relaxed) {
        return;
    }
    // SAFETY: plain reads of kernel globals.
    let (now, hz) = unsafe { (shim::oq_jiffies() as u64, shim::oq_hz() as u64) };
    let last = RESCAN.last_kick.load(Relaxed);
    if now.wrapping_sub(last) < hz / 10 {
        return;
    }
    if RESCAN.last_kick.cmpxchg(last, now, Relaxed).is_ok() {
        // Initialized by `Sensors::register` (`EVER_REGISTERED`), cancelled by its
        // `unregister` after the store is gone.
        Timer::<Rescan>::now(&RESCAN);
    }
}

/// The sensors are registered: [`RESCAN`] is initialized and may be queued.
static EVER_REGISTERED: Atomic<bool> = Atomic::new(false);

/// How often meters look for new listeners of their port on their own.
const RESCAN_MS: u32 = 1000;

/// Makes sure the periodic rescan runs (a meter exists).
pub(crate) fn schedule_rescan() {
    if EVER_REGISTERED.load(Relaxed) {
        // Initialized by `Sensors::register`, cancelled by its `unregister`.
        Timer::<Rescan>::at(&RESCAN, RESCAN_MS);
    }
}

/// Fills the wrapped operations table `t` of family `V6`, a copy of the protocol's.
///
/// # Safety
///
/// `t` must be a valid table that nobody else uses yet.
unsafe fn fill<const V6: bool>(t: *mut bindings::proto_ops) {
    // SAFETY: `t` is valid and ours alone (caller).
    let ops = unsafe { &mut *t };
    ops.accept = Some(accept::<V6>);
    ops.release = Some(release::<V6>);
    ops.setsockopt = Some(setsockopt::<V6>);
    ops.sendmsg = Some(sendmsg::<V6>);
    ops.recvmsg = Some(recvmsg::<V6>);
    ops.splice_read = Some(splice_read::<V6>);
    ops.poll = Some(poll::<V6>);
}

/// First report of an unload waiting for tasks inside the wrappers, and the longest pause
/// between two looks (milliseconds).
const STUCK_REPORT_MS: u64 = 5_000;
const KICK_MAX_MS: u64 = 1_000;

/// Waits until no task is counted inside a wrapper, making the tasks blocked in a call on
/// one of the `graveyard`'s sockets restart it. It looks again after 10 ms, then twice as
/// long each time up to a second, so a task that does not come out costs nothing; after
/// 5 s, and then every minute, it names the tasks still inside (with where they are).
/// It cannot give up: those tasks execute the module's code, which goes when this returns.
fn wait_inflight(graveyard: &[Arc<Tracked>]) {
    let (mut nap, mut waited, mut report) = (10u64, 0u64, STUCK_REPORT_MS);
    while INFLIGHT.load(Acquire) > 0 {
        for rec in graveyard.iter() {
            rec.kick();
        }
        kernel::time::delay::fsleep(Delta::from_millis(nap as i64));
        waited += nap;
        nap = (nap * 2).min(KICK_MAX_MS);
        if waited >= report && INFLIGHT.load(Acquire) > 0 {
            pr_warn!(
                "unload has waited {} s for {} tasks inside the meters' socket wrappers (they must leave before the module's code can go; a task in uninterruptible sleep there needs whatever it waits for, or SIGKILL)\n",
                waited / 1000,
                INFLIGHT.load(Relaxed)
            );
            // SAFETY: walks the task list under RCU; prints only.
            unsafe { shim::oq_name_stuck_tasks() };
            report = waited + 60_000;
        }
    }
}

/// The sensors' registration: wrapped operation tables and the rescan work item.
///
/// # Invariants
///
/// While it exists, [`OPS`] holds two valid tables and [`RESCAN`] is initialized.
/// Made once per module load.
pub(crate) struct Sensors;

impl Sensors {
    /// Builds the wrapped operation tables; `walk` rescans every meter and returns
    /// whether any exists (the store's, registered here so that the sensors need not
    /// import it).
    pub(crate) fn register(walk: fn() -> bool) -> Result<Self> {
        for v6 in [false, true] {
            // SAFETY: `orig` is a valid protocol table; the copy is new memory.
            let t = unsafe { shim::oq_ops_alloc(orig(v6)) };
            if t.is_null() {
                Self::free_tables();
                return Err(ENOMEM);
            }
            // SAFETY: nothing points at the new table yet (this runs in the module's
            // `init`, before any command can create a meter).
            unsafe {
                if v6 {
                    fill::<true>(t);
                } else {
                    fill::<false>(t);
                }
            }
            OPS[usize::from(v6)].store(t as usize, Relaxed);
        }
        // SAFETY: called once, in the module's `init`, before anything can queue the
        // rescan (`EVER_REGISTERED` is still false) or read `walk`.
        unsafe {
            *RESCAN.walk.get() = walk;
            RESCAN.timer.init(
                c_str!("openqos rescan"),
                kernel::static_lock_class!(),
                kernel::static_lock_class!(),
            );
        }
        EVER_REGISTERED.store(true, Relaxed);
        // SAFETY: a plain query of the kernel's configuration.
        let tasks_rcu = unsafe { shim::oq_tasks_rcu_available() };
        if !tasks_rcu {
            pr_warn!("meters disabled: the kernel lacks CONFIG_TASKS_RCU, which unloading needs\n");
        }
        AVAILABLE.store(tasks_rcu, Relaxed);
        // INVARIANT: all initialized above.
        Ok(Sensors)
    }

    /// Frees the tables, which no socket ever had.
    fn free_tables() {
        for t in OPS.iter() {
            // SAFETY: the table (or null) came from `oq_ops_alloc` and no socket has it.
            unsafe { shim::oq_ops_free(t.xchg(0, Relaxed) as *mut bindings::proto_ops) };
        }
    }

    /// Stops the sensors after every meter was shut down (`graveyard` holds their
    /// records): waits until no task can be inside a wrapper any more.
    pub(crate) fn unregister(self, graveyard: KVec<Arc<Tracked>>) {
        // No new rescans (the classifier, which kicks them, is gone).
        EVER_REGISTERED.store(false, Relaxed);
        // Initialized in `register` (type invariant); nothing queues it any more.
        RESCAN.timer.cancel_sync();
        // Every socket got the protocol's operations back, but a task may still hold a
        // table's address (do_accept, __sock_release), and sockets accepted through it
        // keep it: from now on a function loaded from the tables is the protocol's.
        for v6 in [false, true] {
            // SAFETY: both tables are valid (type invariant) and never freed while a
            // socket may have them; the protocol's table is static.
            unsafe { shim::oq_ops_neutralize(ours(v6).cast_mut(), orig(v6)) };
        }
        if EVER_WRAPPED.load(Relaxed) {
            // A task may have loaded a wrapper's address from a table before it was
            // neutralized without having entered it yet: it enters (and counts itself in
            // `INFLIGHT`) before its next voluntary context switch, which a Tasks RCU grace
            // period waits for.
            // SAFETY: may sleep; we are in process context (module exit).
            unsafe { shim::oq_synchronize_rcu_tasks() };
            // Tasks blocked inside a wrapper (accept, send, receive) restart their call,
            // on the protocol's operations.
            wait_inflight(&graveyard);
            // A task that just left a wrapper may still be on its way out of our code: it
            // gets there before its next voluntary context switch.
            // SAFETY: as above.
            unsafe { shim::oq_synchronize_rcu_tasks() };
            // The tables stay: sockets may point at them as long as they live.
        } else {
            Self::free_tables();
        }
        drop(graveyard);
    }
}
