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

use crate::{
    abi::{hist, limits, meter_flags, meter_stat},
    qos_sock::{MoveError, NetRef},
};
use core::{
    ffi::{c_int, c_uint},
    ptr::NonNull,
};
use kernel::{
    bindings,
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Full, Relaxed},
        Arc, Mutex,
    },
    time::Delta,
    types::Opaque,
};

// The bindings contain zero-sized placeholder structs (`its_array`), as in the kernel's own
// `bindings` crate, which allows the same lint.
#[allow(improper_ctypes)]
mod shim {
    use kernel::bindings;

    unsafe extern "C" {
        pub(super) fn oq_port_listeners(
            net: *mut bindings::net,
            port: u16,
            out: *mut *mut bindings::sock,
            max: i32,
        ) -> i32;
        pub(super) fn oq_sock_put(sk: *mut bindings::sock);
        pub(super) fn oq_sock_hold(sk: *mut bindings::sock);
        pub(super) fn oq_sock_wrap(
            sk: *mut bindings::sock,
            expect: *const bindings::proto_ops,
            ops: *const bindings::proto_ops,
            rec: *const core::ffi::c_void,
        ) -> bool;
        pub(super) fn oq_sock_unwrap(
            sk: *mut bindings::sock,
            rec: *const core::ffi::c_void,
            ours: *const bindings::proto_ops,
            orig: *const bindings::proto_ops,
        ) -> bool;
        pub(super) fn oq_sk_read_lock(sk: *mut bindings::sock);
        pub(super) fn oq_sk_read_unlock(sk: *mut bindings::sock);
        pub(super) fn oq_sock_record(
            sock: *mut bindings::socket,
            ops: *const bindings::proto_ops,
        ) -> *mut core::ffi::c_void;
        pub(super) fn oq_socket_set_ops(
            sock: *mut bindings::socket,
            ops: *const bindings::proto_ops,
        );
        pub(super) fn oq_accept_delay_ns(sk: *const bindings::sock) -> u64;
        pub(super) fn oq_kick_waiters(sk: *mut bindings::sock);
        pub(super) fn oq_tasks_rcu_available() -> bool;
        pub(super) fn oq_synchronize_rcu_tasks();
        pub(super) fn oq_sk_has_user_data(sk: *const bindings::sock) -> bool;
        pub(super) fn oq_sk_family(sk: *const bindings::sock) -> u16;
        pub(super) fn oq_sk_ack_backlog(sk: *const bindings::sock) -> u32;
        pub(super) fn oq_inet_stream_ops(v6: bool) -> *const bindings::proto_ops;
        pub(super) fn oq_jiffies() -> core::ffi::c_ulong;
        pub(super) fn oq_hz() -> core::ffi::c_ulong;
        pub(super) fn oq_init_delayed_work(
            dw: *mut bindings::delayed_work,
            f: unsafe extern "C" fn(*mut bindings::work_struct),
        );
        pub(super) fn oq_work_now(dw: *mut bindings::delayed_work);
        pub(super) fn oq_work_at(dw: *mut bindings::delayed_work, ms: u32);
    }
}

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

/// One wrapped operations table per address family.
///
/// # Invariants
///
/// Written once, by [`Sensors::register`], before any socket can point at it, and only
/// read afterwards; it lives in the module's data, so it stays valid until the module's
/// memory goes, after [`Sensors`]' `drop` has taken it off every socket and waited.
struct OpsTable(Opaque<bindings::proto_ops>);

// SAFETY: after its single initialization the table is only read (type invariant).
unsafe impl Sync for OpsTable {}

static OPS_V4: OpsTable = OpsTable(Opaque::uninit());
static OPS_V6: OpsTable = OpsTable(Opaque::uninit());

/// The wrapped operations of family `v6`.
fn ours(v6: bool) -> *const bindings::proto_ops {
    if v6 {
        OPS_V6.0.get()
    } else {
        OPS_V4.0.get()
    }
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

/// Runs `f` on the record of `sock`, if it has one and still has the wrapped operations
/// of family `v6`, with the callback lock held (so the record cannot go meanwhile).
///
/// # Safety
///
/// `sock` must be a valid socket.
unsafe fn with_record<R>(
    sock: *mut bindings::socket,
    v6: bool,
    f: impl FnOnce(&Tracked) -> R,
) -> Option<R> {
    // SAFETY: `sock` is valid (caller).
    let sk = unsafe { sk_of(sock) }?;
    // SAFETY: `sk` is valid as long as `sock` is.
    let _g = unsafe { CallbackRead::new(sk) };
    // SAFETY: `sock` is valid and its callback lock is held.
    let rec = unsafe { shim::oq_sock_record(sock, ours(v6)) };
    // SAFETY: a socket with our operations has a `Tracked` as user data, installed by
    // `Tracked::wrap` (from `Arc::into_raw`) together with the operations and removed
    // only with them under the callback lock we hold (see `oq_sock_record`).
    NonNull::new(rec.cast::<Tracked>()).map(|r| f(unsafe { r.as_ref() }))
}

/// The wrapped `accept`: the protocol's, then the meter's measurements.
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
    // SAFETY: our caller's guarantees are those of the protocol's `accept`.
    let err = unsafe { f(sock, newsock, arg) };
    if err != 0 {
        return err;
    }
    // SAFETY: `sock` is valid for the call.
    let meter = unsafe { with_record(sock, V6, |r| r.meter.clone()) };
    // SAFETY: `newsock` is the new socket, not yet visible to anyone else, with a sock.
    unsafe { Meter::adopt(meter, newsock, V6) };
    0
}

/// The wrapped `release`: takes the record off, then the protocol's.
///
/// # Safety
///
/// Called by the socket layer with its usual guarantees for `proto_ops::release`.
unsafe extern "C" fn release<const V6: bool>(sock: *mut bindings::socket) -> c_int {
    let _in = Inflight::enter();
    // SAFETY: `sock` is valid for the call.
    if let Some(sk) = unsafe { sk_of(sock) } {
        // SAFETY: `sock` is valid for the call.
        let rec = unsafe { with_record(sock, V6, core::ptr::from_ref) };
        if let Some(rec) = rec {
            // SAFETY: `sk` is valid; `rec` is only compared, under the lock, with the
            // user data; if it still is, we now own the reference it held.
            if unsafe { shim::oq_sock_unwrap(sk.as_ptr(), rec.cast(), ours(V6), core::ptr::null()) }
            {
                // SAFETY: the user data held a reference from `Arc::into_raw`.
                let rec = unsafe { Arc::from_raw(rec) };
                rec.meter.forget(&rec);
            }
        }
    }
    // SAFETY: `orig` is a protocol table, valid forever.
    match unsafe { (*orig(V6)).release } {
        // SAFETY: our caller's guarantees are those of the protocol's `release`.
        Some(f) => unsafe { f(sock) },
        None => 0,
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
    // SAFETY: our caller's guarantees are those of the protocol's `sendmsg`.
    let n = unsafe { f(sock, msg, len) };
    if let Ok(n @ 1..) = u64::try_from(n) {
        // SAFETY: `sock` is valid for the call.
        unsafe { with_record(sock, V6, |r| r.tx.add(n)) };
    }
    n
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
    // SAFETY: our caller's guarantees are those of the protocol's `recvmsg`.
    let n = unsafe { f(sock, msg, len, flags) };
    // Peeked data is counted when it is read.
    if flags & bindings::MSG_PEEK as c_int == 0 {
        if let Ok(n @ 1..) = u64::try_from(n) {
            // SAFETY: `sock` is valid for the call.
            unsafe { with_record(sock, V6, |r| r.rx.add(n)) };
        }
    }
    n
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
        // SAFETY: `sock` is valid for the call.
        unsafe { with_record(sock, V6, |r| r.rx.add(n)) };
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
    ) -> Result<Arc<Self>> {
        // SAFETY: `sk` is valid (caller).
        let v6 = unsafe { shim::oq_sk_family(sk.as_ptr()) } == bindings::AF_INET6 as u16;
        let rec = Arc::new(
            Self {
                sk,
                meter,
                v6,
                listener,
                slot: Atomic::new(usize::MAX),
                rx: Sum::new(),
                tx: Sum::new(),
            },
            GFP_KERNEL,
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

    /// Connections in the accept queue (listeners).
    fn backlog(&self) -> u64 {
        // SAFETY: `sk` is valid (type invariant).
        u64::from(unsafe { shim::oq_sk_ack_backlog(self.sk.as_ptr()) })
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
    /// How many of them are listeners.
    listeners: usize,
    /// Bytes of connections closed since.
    rx_closed: u64,
    /// Bytes of connections closed since.
    tx_closed: u64,
}

impl MeterInner {
    fn remove(&mut self, rec: &Tracked) {
        let i = rec.slot.load(Relaxed);
        if i >= self.tracked.len() || !core::ptr::eq(&*self.tracked[i], rec) {
            return;
        }
        let last = self.tracked.len() - 1;
        self.tracked.swap(i, last);
        self.tracked[i].slot.store(i, Relaxed);
        drop(self.tracked.pop());
        if rec.listener {
            self.listeners -= 1;
        } else {
            self.rx_closed += rec.rx.get();
            self.tx_closed += rec.tx.get();
        }
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
                    listeners: 0,
                    rx_closed: 0,
                    tx_closed: 0,
                }),
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

    /// Wraps the listeners of the port in `net` that are not wrapped yet, and makes the
    /// tasks blocked in their `accept()` restart it through the wrapper.
    pub(crate) fn rescan(self: &Arc<Self>, net: NetRef) {
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
                if let Ok(rec) = unsafe { Tracked::new(sk, self.clone(), true) } {
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
        if inner.dead || (rec.listener && inner.listeners >= limits::MAX_METER_LISTENERS) {
            return false;
        }
        let slot = inner.tracked.len();
        if inner.tracked.push(rec.clone(), GFP_KERNEL).is_err() {
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
        if rec.listener {
            inner.listeners += 1;
        }
        true
    }

    /// Counts the connection just accepted on `newsock` and tracks it, or, if its
    /// listener is no longer metered (`meter` is `None`) or the meter was deleted, gives
    /// it the protocol's operations back.
    ///
    /// # Safety
    ///
    /// `newsock` must be a socket just accepted, with a sock, not yet installed in a file
    /// (so nothing else uses it), with our operations of family `v6`.
    unsafe fn adopt(meter: Option<Arc<Meter>>, newsock: *mut bindings::socket, v6: bool) {
        // SAFETY: `newsock` is valid (caller).
        let sk = unsafe { sk_of(newsock) };
        let tracked = match (meter, sk) {
            (Some(m), Some(sk)) => {
                // SAFETY: `sk` is the accepted socket, valid.
                let ns = unsafe { shim::oq_accept_delay_ns(sk.as_ptr()) };
                m.accepted.inc();
                m.delay_ns.add(ns);
                m.hist[hist::bucket(ns / 1000)].inc();
                // SAFETY: `sk` is valid.
                match unsafe { Tracked::new(sk, m.clone(), false) } {
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
        let list = {
            let mut inner = self.inner.lock();
            inner.dead = true;
            inner.listeners = 0;
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
        let (waiting, open, listeners, rx, tx) = {
            let inner = self.inner.lock();
            let (mut waiting, mut rx, mut tx) = (0, inner.rx_closed, inner.tx_closed);
            for rec in inner.tracked.iter() {
                if rec.listener {
                    waiting += rec.backlog();
                } else {
                    rx += rec.rx.get();
                    tx += rec.tx.get();
                }
            }
            let open = inner.tracked.len() - inner.listeners;
            (waiting, open as u64, inner.listeners as u64, rx, tx)
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
            ],
            hist,
        }
    }
}

/// Flags of a meter created for a rule's outgoing port.
pub(crate) const AUTO: u32 = meter_flags::AUTO;

/// The work item that wraps listeners that appeared after their port's meter.
struct RescanWork(Opaque<bindings::delayed_work>);

// SAFETY: the work item is initialized once at registration and then only used through
// the workqueue API, which does its own locking.
unsafe impl Sync for RescanWork {}

static RESCAN: RescanWork = RescanWork(Opaque::uninit());
static LAST_KICK: Atomic<u64> = Atomic::new(0);

/// Asks for a rescan of every meter soon (at most ten times a second). Called by the
/// classifier, in any context, when it moves a connection to a listener that is not
/// wrapped: a server may have started listening on a metered port.
pub(crate) fn kick_rescan() {
    if !EVER_REGISTERED.load(Relaxed) {
        return;
    }
    // SAFETY: plain reads of kernel globals.
    let (now, hz) = unsafe { (shim::oq_jiffies() as u64, shim::oq_hz() as u64) };
    let last = LAST_KICK.load(Relaxed);
    if now.wrapping_sub(last) < hz / 10 {
        return;
    }
    if LAST_KICK.cmpxchg(last, now, Relaxed).is_ok() {
        // SAFETY: initialized by `Sensors::register` (`EVER_REGISTERED`), cancelled by its
        // `drop` after the classifier is gone.
        unsafe { shim::oq_work_now(RESCAN.0.get()) };
    }
}

static EVER_REGISTERED: Atomic<bool> = Atomic::new(false);

/// How often meters look for new listeners of their port on their own.
const RESCAN_MS: u32 = 1000;

/// Makes sure the periodic rescan runs (a meter exists).
pub(crate) fn schedule_rescan() {
    if EVER_REGISTERED.load(Relaxed) {
        // SAFETY: initialized by `Sensors::register`, cancelled by its `unregister`.
        unsafe { shim::oq_work_at(RESCAN.0.get(), RESCAN_MS) };
    }
}

/// # Safety
///
/// Called by the workqueue for [`RESCAN`].
unsafe extern "C" fn rescan_fn(_work: *mut bindings::work_struct) {
    if crate::qos_classifier::rescan_meters(&crate::qos_classifier::NETS.lock()) {
        schedule_rescan();
    }
}

/// The sensors' registration: wrapped operation tables and the rescan work item.
///
/// # Invariants
///
/// While it exists, [`OPS_V4`], [`OPS_V6`] and [`RESCAN`] are initialized.
pub(crate) struct Sensors;

impl Sensors {
    /// Builds the wrapped operation tables.
    pub(crate) fn register() -> Self {
        for v6 in [false, true] {
            // SAFETY: `orig` is a valid protocol table; copying it is a plain read.
            let mut ops = unsafe { core::ptr::read(orig(v6)) };
            if v6 {
                ops.accept = Some(accept::<true>);
                ops.release = Some(release::<true>);
                ops.sendmsg = Some(sendmsg::<true>);
                ops.recvmsg = Some(recvmsg::<true>);
                ops.splice_read = Some(splice_read::<true>);
            } else {
                ops.accept = Some(accept::<false>);
                ops.release = Some(release::<false>);
                ops.sendmsg = Some(sendmsg::<false>);
                ops.recvmsg = Some(recvmsg::<false>);
                ops.splice_read = Some(splice_read::<false>);
            }
            // SAFETY: nothing points at the table yet (no socket was wrapped: this runs
            // in the module's `init`, before any command can create a meter).
            unsafe { ours(v6).cast_mut().write(ops) };
        }
        // SAFETY: the work item is not in use yet.
        unsafe { shim::oq_init_delayed_work(RESCAN.0.get(), rescan_fn) };
        EVER_REGISTERED.store(true, Relaxed);
        // SAFETY: a plain query of the kernel's configuration.
        let tasks_rcu = unsafe { shim::oq_tasks_rcu_available() };
        if !tasks_rcu {
            pr_warn!("meters disabled: the kernel lacks CONFIG_TASKS_RCU, which unloading needs\n");
        }
        AVAILABLE.store(tasks_rcu, Relaxed);
        // INVARIANT: all initialized above.
        Sensors
    }

    /// Stops the sensors after every meter was shut down (`graveyard` holds their
    /// records): waits until no task can be inside a wrapper any more.
    pub(crate) fn unregister(self, graveyard: KVec<Arc<Tracked>>) {
        // No new rescans (the classifier, which kicks them, is gone).
        EVER_REGISTERED.store(false, Relaxed);
        // SAFETY: initialized in `register` (type invariant).
        unsafe { bindings::cancel_delayed_work_sync(RESCAN.0.get()) };
        if EVER_WRAPPED.load(Relaxed) {
            // Every wrapped socket got its operations back. A task may still have loaded
            // a wrapper's address without having entered it; it does so before its next
            // voluntary context switch, which a Tasks RCU grace period waits for.
            // SAFETY: may sleep; we are in process context (module exit).
            unsafe { shim::oq_synchronize_rcu_tasks() };
            // Tasks blocked inside a wrapper (accept, send, receive) restart their call,
            // on the protocol's operations.
            let mut rounds = 0u32;
            while INFLIGHT.load(Acquire) > 0 {
                for rec in graveyard.iter() {
                    rec.kick();
                }
                rounds += 1;
                if rounds % 500 == 0 {
                    pr_warn!(
                        "waiting for {} tasks to leave the meters' wrappers\n",
                        INFLIGHT.load(Relaxed)
                    );
                }
                kernel::time::delay::fsleep(Delta::from_millis(10));
            }
            // A task that just left a wrapper may still be on its way out of our code: it
            // gets there before its next voluntary context switch.
            // SAFETY: as above.
            unsafe { shim::oq_synchronize_rcu_tasks() };
        }
        drop(graveyard);
    }
}
