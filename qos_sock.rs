// SPDX-License-Identifier: GPL-2.0

//! Module-owned listening sockets with the forwarding hook: the audited unsafe core of
//! the classification path.
//!
//! Everything of the module listeners that touches `struct sock`, the accept queue or the
//! socket callbacks is in this file (and, for static inlines and macros, in
//! `qos_shim.c`); the classifier built on [`ModuleListener`] is safe Rust. The other
//! unsafe code of the module is the sensors' wrapped `proto_ops` (`qos_sensor.rs`), the
//! timer (`qos_work.rs`) and the registrations (`openqos_main.rs`, `qos_netlink.rs`). See
//! `Documentation/design.md` for the reasoning in prose; the `// SAFETY:` comments below
//! point at it.
//!
//! Layering: the bottom of the module, above only the C boundary and the timer. It sees
//! the classifier through [`Forwarder`], which it owns, and tells its callers what they
//! need through return values ([`Target::bare`]); it never calls up.

use crate::qos_ffi as shim;
pub(crate) use crate::qos_ffi::Peer;
use crate::qos_work::{impl_has_timer, new_timer, CancelsBeforeDrop, Pinned, Timer, TimerItem};
use core::{cell::Cell, ffi::c_void, marker::PhantomData, ptr::NonNull};
use kernel::{
    bindings,
    error::to_result,
    prelude::*,
    sync::{
        atomic::{Atomic, Full, Relaxed},
        rcu,
    },
};

/// Prototypes of `qos_shim.c` (see `qos_shim.h`).
/// Address family of a module listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    /// `AF_INET`, bound to `0.0.0.0`.
    Inet,
    /// `AF_INET6`, bound to `[::]`, IPv6 only.
    Inet6Only,
    /// `AF_INET6`, bound to `[::]`, dual stack (IPv4 clients arrive v4-mapped).
    Inet6Dual,
}

/// Why a connection could not be moved to its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MoveError {
    /// Another context changed the queue head; look again.
    Race,
    /// No listener on the outgoing port, or it is closing.
    NoListener,
    /// The target's accept queue is full.
    Full,
    /// The target cannot take a socket of this family (see the rule flags).
    Family,
    /// A Fast Open request, or the namespace is going away.
    Other,
    /// The outgoing port is the module's own listener.
    Loop,
    /// The connection is at the head of its queue, which only the drainer may move.
    Head,
    /// Handing the connection over to another module listener needs its lock, which only
    /// process context can take: try again from there.
    Process,
}

/// Where a moved connection went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Moved {
    /// Out of the module: into a server's accept queue, without our hook.
    Out,
    /// Handed over to another module listener: it keeps the hook, and that listener's
    /// rule now decides about it (and about the data it already has).
    HandedOver,
}

impl MoveError {
    fn from_shim(code: i32) -> Result<Moved, MoveError> {
        match shim::MoveResult::from_c(code) {
            Some(shim::MoveResult::Ok) => Ok(Moved::Out),
            Some(shim::MoveResult::Handed) => Ok(Moved::HandedOver),
            Some(shim::MoveResult::Race) => Err(MoveError::Race),
            Some(shim::MoveResult::NotListening) => Err(MoveError::NoListener),
            Some(shim::MoveResult::Full) => Err(MoveError::Full),
            Some(shim::MoveResult::Family) => Err(MoveError::Family),
            Some(shim::MoveResult::Loop) => Err(MoveError::Loop),
            Some(shim::MoveResult::Head) => Err(MoveError::Head),
            Some(shim::MoveResult::Fastopen | shim::MoveResult::Netns) | None => {
                Err(MoveError::Other)
            }
        }
    }
}

/// The head of a module listener's accept queue, as seen by the single drainer.
///
/// Only a token: it is compared, never dereferenced, by the Rust side.
pub(crate) struct QueueHead {
    req: NonNull<bindings::request_sock>,
    child: Option<NonNull<bindings::sock>>,
}

impl QueueHead {
    /// Whether `child` is this head's connection.
    pub(crate) fn is(&self, child: &LockedChild<'_>) -> bool {
        self.child == Some(child.sk)
    }
}

/// What a peek at a connection's first data found besides the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PeekEnd {
    /// The client has closed its side: no more data will come.
    pub(crate) fin: bool,
    /// The byte limit was reached.
    pub(crate) full: bool,
}

impl PeekEnd {
    /// Decodes the shim's `OQ_PEEK_*` flags; `None` for `OQ_PEEK_BUSY`.
    fn from_shim(flags: i32) -> Option<Self> {
        (flags & shim::OQ_PEEK_BUSY == 0).then_some(PeekEnd {
            fin: flags & shim::OQ_PEEK_FIN != 0,
            full: flags & shim::OQ_PEEK_FULL != 0,
        })
    }
}

/// Calls the consumer passed to the shim's peek functions.
///
/// # Safety
///
/// `ctx` points to a live `&mut dyn FnMut(&[u8]) -> bool`; `data` is readable for `len`
/// bytes for the duration of the call.
unsafe extern "C" fn feed_trampoline(ctx: *mut c_void, data: *const u8, len: u32) -> bool {
    // SAFETY: see the function's safety requirements.
    let (f, d) = unsafe {
        (
            &mut *ctx.cast::<&mut dyn FnMut(&[u8]) -> bool>(),
            core::slice::from_raw_parts(data, len as usize),
        )
    };
    f(d)
}

/// A child connection waiting in a module listener's queue, whose socket spinlock the
/// current context holds (the TCP receive path holds it around `sk_data_ready`).
///
/// # Invariants
///
/// `sk` is a valid child socket, locked by this CPU (`bh_lock_sock`) and owned by no
/// process, for `'a`.
pub(crate) struct LockedChild<'a> {
    sk: NonNull<bindings::sock>,
    _lock: PhantomData<&'a ()>,
}

impl LockedChild<'_> {
    /// The connection's addresses.
    pub(crate) fn peer(&self) -> Peer {
        let mut peer = Peer::default();
        // SAFETY: `sk` is valid (type invariant); `peer` is a valid out pointer.
        unsafe { shim::oq_child_peer(self.sk.as_ptr(), &mut peer) };
        peer
    }

    /// The connection's socket cookie (unique, never 0).
    pub(crate) fn cookie(&self) -> u64 {
        // SAFETY: `sk` is valid (type invariant).
        unsafe { shim::oq_sock_cookie(self.sk.as_ptr()) }
    }

    /// Feeds the bytes from offset `skip` up to `max` of the data received so far (none
    /// consumed) to `feed` until it returns `false`.
    pub(crate) fn peek(&self, skip: u32, max: u32, mut feed: impl FnMut(&[u8]) -> bool) -> PeekEnd {
        let mut f: &mut dyn FnMut(&[u8]) -> bool = &mut feed;
        // SAFETY: `sk` is valid and locked (type invariant); `f` outlives the call.
        let flags = unsafe {
            shim::oq_child_peek(
                self.sk.as_ptr(),
                skip,
                max,
                feed_trampoline,
                core::ptr::from_mut(&mut f).cast(),
            )
        };
        PeekEnd::from_shim(flags).unwrap_or(PeekEnd {
            fin: false,
            full: false,
        })
    }
}

/// Proof that the current context is a listener's single drainer (see
/// [`ModuleListener::kick`]): only it may remove or replace the head of the queue.
pub(crate) struct DrainCx<'a> {
    process: bool,
    locked: Option<&'a LockedChild<'a>>,
    /// The locked child was handed over to another module listener by this drain.
    handed_over: Cell<bool>,
}

impl DrainCx<'_> {
    /// Whether the drain runs in process context (it may refuse connections).
    pub(crate) fn process(&self) -> bool {
        self.process
    }

    /// The child whose lock the drainer holds (it runs from that child's hook), if any.
    pub(crate) fn locked(&self) -> Option<&LockedChild<'_>> {
        self.locked
    }

    /// Whether this drain handed the locked child over to another module listener.
    pub(crate) fn handed_over(&self) -> bool {
        self.handed_over.get()
    }
}

/// What a forwarder did with a child's new data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChildOutcome {
    /// Not interested: remove the hook from the child and deliver its data normally.
    Release,
    /// The child stays (or was moved); deliver its data normally.
    Keep,
    /// The child was handed over to another module listener: deliver its data to that
    /// listener's forwarder.
    Again,
}

/// A listening socket found by [`ListenSock::lookup`], valid for the RCU read section.
pub(crate) struct Target<'a> {
    sk: NonNull<bindings::sock>,
    _rcu: PhantomData<&'a rcu::Guard>,
}

impl<'a> Target<'a> {
    /// Connections in the listener's accept queue, not yet accepted.
    pub(crate) fn waiting(&self) -> u32 {
        // SAFETY: `sk` is a valid listener for `'a`.
        unsafe { shim::oq_sk_ack_backlog(self.sk.as_ptr()) }
    }

    /// Whether the listener has no user data: it is neither a module listener nor
    /// metered yet. (If its port is metered, a server started listening there since the
    /// sensors last looked: the caller tells them; the socket core calls nothing above
    /// it.)
    pub(crate) fn bare(&self) -> bool {
        // SAFETY: `sk` is a valid listener for `'a` (RCU).
        !unsafe { shim::oq_sk_has_user_data(self.sk.as_ptr()) }
    }

    /// The module listener this target is, if it is one.
    pub(crate) fn module<T: Forwarder>(&self) -> Option<&'a ModuleListener<T>> {
        // SAFETY: `sk` is a valid listener for `'a` (RCU). The shim returns its
        // `sk_user_data` only if its `sk_data_ready` is `hook::<T>`.
        let ctx = unsafe { shim::oq_sk_module_ctx(self.sk.as_ptr(), hook::<T>) };
        // SAFETY: a listener hooked with `hook::<T>` has a pinned `ModuleListener<T>` as its
        // context (type invariant), which its `drop` frees only after unhooking it and
        // waiting for an RCU grace period: not before `'a` ends.
        NonNull::new(ctx.cast::<ModuleListener<T>>()).map(|m| unsafe { &*m.as_ptr() })
    }
}

/// Policy of a module listener: what to do with the connections it receives.
pub(crate) trait Forwarder: Send + Sync + Sized + 'static {
    /// Handles the connections waiting in `listener`'s queue.
    ///
    /// Called from the hooks (softirq, `cx.process == false`) and from the listener's
    /// work item (process context). Never called concurrently for one listener:
    /// [`ModuleListener`] serializes drainers ([`DrainCx`] is the proof), so the queue
    /// head can only be removed by the caller.
    fn drain(&self, listener: &ModuleListener<Self>, cx: &DrainCx<'_>) -> Drained;

    /// Handles new data of a child still waiting in `listener`'s queue. Called from the
    /// child's `sk_data_ready`, concurrently with drains and with other children.
    fn child_data(
        &self,
        _listener: &ModuleListener<Self>,
        _child: &LockedChild<'_>,
    ) -> ChildOutcome {
        ChildOutcome::Release
    }
}

/// How a drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Drained {
    /// The queue is empty.
    Empty,
    /// The rest needs process context (a refusal, or the budget ran out).
    Defer,
    /// The head waits for its first data; look again after this many milliseconds.
    Wait(u32),
    /// The forwarder has nothing in force: a rule set replacement is switching. The queue
    /// waits until the replacement calls [`ModuleListener::resume`].
    Held,
}

/// Drains one call of [`ModuleListener::run`] may make before it hands the rest to the
/// work item (each drain handles at most `HOOK_BUDGET` connections).
const RUN_ROUNDS: u32 = 4;

/// A TCP listening socket created and owned by the module.
///
/// # Invariants
///
/// `sock` points to a valid `struct socket` created with `sock_create_kern()`, owned by
/// this object and released exactly once, in `drop`. Its `sk` is never NULL.
pub(crate) struct ListenSock {
    sock: NonNull<bindings::socket>,
}

// SAFETY: the socket is only used through kernel functions that do their own locking.
unsafe impl Send for ListenSock {}
// SAFETY: as above; `&ListenSock` only allows operations that are safe concurrently.
unsafe impl Sync for ListenSock {}

impl ListenSock {
    fn create(net: NetRef, family: Family, port: u16) -> Result<Self> {
        let (af, v6only) = match family {
            Family::Inet => (bindings::AF_INET, false),
            Family::Inet6Only => (bindings::AF_INET6, true),
            Family::Inet6Dual => (bindings::AF_INET6, false),
        };
        let mut sock = core::ptr::null_mut();
        // SAFETY: `net` is a live namespace (`NetRef` invariant); `sock` is a valid out
        // pointer.
        to_result(unsafe {
            shim::oq_listen_sock_create(net.0.as_ptr(), af as i32, port, v6only, &mut sock)
        })?;
        // INVARIANT: success means `sock` is a new socket with a sock attached.
        Ok(Self {
            sock: NonNull::new(sock).ok_or(EINVAL)?,
        })
    }

    /// Creates a hidden listener of `net` for `family`, without a hook: it listens on an
    /// ephemeral port and is then taken out of the listening hash, so that no client and
    /// no lookup reaches it. Connections enter it only when the module moves them there
    /// (the parks of a prioritized port, `qos_prio.rs`).
    pub(crate) fn hidden(net: NetRef, family: Family) -> Result<Self> {
        let this = Self::create(net, family, 0)?;
        listen(&this)?;
        // SAFETY: the socket is a valid listener of ours. A SYN that reached it in the
        // moment it was hashed makes an ordinary child here, released like the others.
        unsafe { shim::oq_park_unhash(this.sk()) };
        Ok(this)
    }

    /// A counted reference to the socket, usable from any context after `self` is gone
    /// (moves into or out of a closed listener fail).
    pub(crate) fn sk_ref(&self) -> ListenRef {
        let sk = self.sk();
        // SAFETY: `sk` is valid (type invariant); the reference taken here is dropped by
        // `ListenRef`'s `drop`.
        unsafe { shim::oq_sock_hold(sk) };
        // INVARIANT: a held reference to a listening socket of the module's.
        ListenRef {
            // SAFETY: `sk` is never NULL (type invariant).
            sk: unsafe { NonNull::new_unchecked(sk) },
        }
    }

    fn sk(&self) -> *mut bindings::sock {
        // SAFETY: `self.sock` is valid by the type invariant.
        unsafe { shim::oq_socket_sk(self.sock.as_ptr()) }
    }

    /// Connections waiting in this listener's accept queue.
    pub(crate) fn waiting(&self) -> u32 {
        // SAFETY: `sk()` is valid by the type invariant.
        unsafe { shim::oq_sk_ack_backlog(self.sk()) }
    }

    /// Finds the listener a connection to `port` on the same local address would reach.
    pub(crate) fn lookup<'a>(
        &self,
        g: &'a rcu::Guard,
        peer: &Peer,
        port: u16,
    ) -> Option<Target<'a>> {
        // SAFETY: `sk()` is valid (type invariant).
        unsafe { lookup_from(self.sk(), g, peer, port) }
    }

    /// Moves `head` into `dst`'s accept queue and wakes `dst`'s waiters. Without our
    /// hook, unless `locked` is the head's lock and `dst` a module listener.
    fn move_head(
        &self,
        head: &QueueHead,
        dst: &Target<'_>,
        hook: shim::Hook,
        locked: Option<&LockedChild<'_>>,
    ) -> Result<Moved, MoveError> {
        let hand_over = locked.is_some_and(|c| head.is(c));
        // SAFETY: both sockets are valid (type invariant, RCU for `dst`); the shim takes
        // both queue locks and checks under them that `head` is still this queue's head.
        // `hand_over` only if we hold the head child's lock, as the shim requires.
        MoveError::from_shim(unsafe {
            shim::oq_move_head(
                self.sk(),
                head.req.as_ptr(),
                dst.sk.as_ptr(),
                hook,
                hand_over,
            )
        })
    }

    /// Moves `child`, if it waits in this queue and is not its head, into `dst`'s accept
    /// queue and wakes `dst`'s waiters. With `hand_over` and if `dst` is a module
    /// listener, the child keeps our hook (we hold its lock).
    fn move_child(
        &self,
        child: &LockedChild<'_>,
        dst: &Target<'_>,
        hook: shim::Hook,
        hand_over: bool,
    ) -> Result<Moved, MoveError> {
        // SAFETY: the sockets are valid (type invariants, RCU for `dst`); the shim finds
        // `child` in the queue under the queue locks and moves nothing if it is absent.
        // `LockedChild` proves we hold the child's lock, as a hand-over requires.
        MoveError::from_shim(unsafe {
            shim::oq_move_child(
                self.sk(),
                child.sk.as_ptr(),
                dst.sk.as_ptr(),
                hook,
                hand_over,
            )
        })
    }

    /// Accepts the queue head and resets it (RST). Process context only.
    ///
    /// Drainers are serialized and only drainers remove the head of this queue, so the
    /// connection accepted here is the head the caller decided to refuse.
    fn refuse_head(&self) -> Result {
        let mut new = core::ptr::null_mut();
        // SAFETY: `self.sock` is valid; `O_NONBLOCK` keeps `kernel_accept` from sleeping
        // for a connection (it may still take the socket lock, which is fine here).
        to_result(unsafe {
            bindings::kernel_accept(self.sock.as_ptr(), &mut new, bindings::O_NONBLOCK as i32)
        })?;
        // SAFETY: `kernel_accept` succeeded, so `new` is a socket we own. Zero linger makes
        // the release send an RST instead of a FIN that would look like success.
        unsafe {
            shim::oq_sock_no_linger(new);
            bindings::sock_release(new);
        }
        Ok(())
    }
}

impl Drop for ListenSock {
    fn drop(&mut self) {
        // SAFETY: by the type invariant we own the socket and this is the only release.
        unsafe { bindings::sock_release(self.sock.as_ptr()) };
    }
}

/// A counted reference to one of the module's hidden listeners ([`ModuleListener::
/// new_hidden`]): a park, whose queue holds connections of one class of a prioritized
/// port, or a refusal queue. Nobody accepts from a park, so any context may move any of
/// its connections (the shim checks under both queue locks that it is still there).
///
/// # Invariants
///
/// `sk` is a TCP socket created by the module as a listener, on which this value holds a
/// reference (`sock_hold`), so it stays allocated while the value lives. Once its owner
/// closes it, its state is no longer `TCP_LISTEN` and every move into or out of it fails.
pub(crate) struct ListenRef {
    sk: NonNull<bindings::sock>,
}

// SAFETY: the socket is only used through kernel functions that do their own locking, and
// its reference may be dropped from any context (`sock_put` frees in softirq too).
unsafe impl Send for ListenRef {}
// SAFETY: as above.
unsafe impl Sync for ListenRef {}

/// A connection seen in a park's queue: its child (a token for [`ListenRef::move_to`],
/// never dereferenced by Rust) and addresses.
pub(crate) struct Parked {
    child: NonNull<bindings::sock>,
    /// The connection's addresses and age.
    pub(crate) peer: Peer,
}

impl ListenRef {
    /// The listener as a target of a move.
    pub(crate) fn target(&self) -> Target<'_> {
        // INVARIANT: the socket stays allocated for the borrow (type invariant).
        Target {
            sk: self.sk,
            _rcu: PhantomData,
        }
    }

    /// Connections in the queue.
    pub(crate) fn waiting(&self) -> u32 {
        // SAFETY: `sk` is valid (type invariant).
        unsafe { shim::oq_sk_ack_backlog(self.sk.as_ptr()) }
    }

    /// The oldest (`tail == false`) or newest connection of the queue.
    pub(crate) fn peek(&self, tail: bool) -> Option<Parked> {
        let mut peer = Peer::default();
        // SAFETY: `sk` is valid; the shim reads the queue under its lock.
        let req = unsafe { shim::oq_park_peek(self.sk.as_ptr(), tail, &mut peer) };
        if req.is_null() {
            return None;
        }
        Some(Parked {
            child: peer.child?,
            peer,
        })
    }

    /// Moves `c`, if it is still in this queue, into `dst`'s accept queue and wakes
    /// `dst`'s waiters.
    pub(crate) fn move_to(&self, c: &Parked, dst: &Target<'_>) -> Result<Moved, MoveError> {
        // SAFETY: both sockets are valid (type invariant; `Target`'s lifetime); the shim
        // only compares `c.child` with the queue's children under the queue locks, and
        // moves nothing if it is not there.
        MoveError::from_shim(unsafe {
            shim::oq_park_move(self.sk.as_ptr(), c.child.as_ptr(), dst.sk.as_ptr())
        })
    }

    /// Finds the listener a connection to `port` on the same local address would reach.
    pub(crate) fn lookup<'a>(
        &self,
        g: &'a rcu::Guard,
        peer: &Peer,
        port: u16,
    ) -> Option<Target<'a>> {
        // SAFETY: `sk` is valid (type invariant).
        unsafe { lookup_from(self.sk.as_ptr(), g, peer, port) }
    }
}

impl Drop for ListenRef {
    fn drop(&mut self) {
        // SAFETY: we hold a reference (type invariant), given back exactly once.
        unsafe { shim::oq_sock_put(self.sk.as_ptr()) };
    }
}

/// Finds the listener a connection to `port` on the same local address would reach, in
/// the namespace of `src`.
///
/// # Safety
///
/// `src` is a valid socket.
unsafe fn lookup_from<'a>(
    src: *mut bindings::sock,
    _g: &'a rcu::Guard,
    peer: &Peer,
    port: u16,
) -> Option<Target<'a>> {
    // SAFETY: `src` is valid (caller); the result is a listener, freed only after an RCU
    // grace period (SOCK_RCU_FREE), and `_g` keeps the read section open for `'a`.
    let sk = unsafe { shim::oq_lookup_listener(src, peer, port) };
    NonNull::new(sk).map(|sk| Target {
        sk,
        _rcu: PhantomData,
    })
}

/// Makes a bound socket of the module listen, with the module's backlog.
fn listen(sock: &ListenSock) -> Result {
    // SAFETY: `sock.sock` is a valid bound socket (its type invariant).
    to_result(unsafe {
        bindings::kernel_listen(
            sock.sock.as_ptr(),
            crate::abi::limits::LISTEN_BACKLOG as i32,
        )
    })
}

/// A network namespace, borrowed for the duration of a netlink request or pernet call.
///
/// # Invariants
///
/// Points to a live `struct net` for as long as the value exists.
#[derive(Clone, Copy)]
pub(crate) struct NetRef(pub(crate) NonNull<bindings::net>);

impl NetRef {
    /// Wraps a namespace pointer.
    ///
    /// # Safety
    ///
    /// `net` must stay alive for as long as the returned value is used.
    pub(crate) unsafe fn new(net: *mut bindings::net) -> Option<Self> {
        NonNull::new(net).map(NetRef)
    }
}

/// A module listener: a [`ListenSock`] whose connections are handed to a [`Forwarder`].
///
/// # Invariants
///
/// From `listen()` until `drop`, the socket's `sk_user_data` points to `self` and its
/// `sk_data_ready` is [`hook::<T>`], and so do those of its children until they leave
/// the queue: the shim takes both off a child before moving it, or, when it hands the
/// child over to another module listener (under the child's lock and both queue locks,
/// inside an RCU read section, after checking that the target is still hooked), points
/// the child at that listener instead. `self` is pinned, so the pointer stays valid.
/// `drop` unhooks the listener, waits for an RCU grace period (clones in flight, and
/// children handed over to it, are queued by then), unhooks the queued children, waits
/// again (every hook invocation runs inside an RCU read section) and cancels the work
/// item before `self` goes away.
#[pin_data(PinnedDrop)]
pub(crate) struct ModuleListener<T: Forwarder> {
    #[pin]
    work: Timer<Self>,
    sock: ListenSock,
    pending: Atomic<bool>,
    draining: Atomic<bool>,
    peek_head: Atomic<bool>,
    /// The policy.
    pub(crate) fwd: T,
}

// SAFETY: the work item is only touched through the workqueue API, which is thread safe;
// the other fields are `Send`.
unsafe impl<T: Forwarder> Send for ModuleListener<T> {}
// SAFETY: shared access only reads the socket pointer, uses atomics, or queues the work
// item, all of which are safe from any context.
unsafe impl<T: Forwarder> Sync for ModuleListener<T> {}

/// The forwarding hook, installed as `sk_data_ready` of module listeners (and inherited
/// by their children).
///
/// # Safety
///
/// Called by the TCP stack with a valid socket inside an RCU read section: a module
/// listener, or a child cloned from one, with the child's socket spinlock held (the TCP
/// receive path holds it around `sk_data_ready`).
unsafe extern "C" fn hook<T: Forwarder>(sk: *mut bindings::sock) {
    let _rcu = rcu::read_lock();
    // SAFETY: `sk` is valid (function safety requirement).
    if unsafe { shim::oq_sk_is_listener(sk) } {
        // SAFETY: `sk` is valid.
        let ctx = unsafe { shim::oq_sk_hook_ctx(sk) }.cast::<ModuleListener<T>>();
        // SAFETY: a non-NULL `sk_user_data` on a socket with this hook points to a pinned
        // `ModuleListener<T>` (type invariant), which is freed only after its `drop` has
        // unhooked it and waited for RCU readers like this one.
        if let Some(this) = unsafe { ctx.as_ref() } {
            match Nest::enter() {
                Some(_nest) => this.kick(false),
                // A chain longer than any rule set may have (a change under way): the
                // rest of it runs in process context, from the work item.
                None => this.kick_later(),
            }
        }
        return;
    }
    let child = LockedChild {
        // SAFETY: `sk` is not NULL (the stack called us on it).
        sk: unsafe { NonNull::new_unchecked(sk) },
        _lock: PhantomData,
    };
    child.data_ready::<T>();
}

/// One level of module listener hooks running nested on this CPU (a chain of rules: the
/// hook moves a connection on and calls the next listener's hook). At most
/// [`crate::abi::limits::MAX_CHAIN_DEPTH`] levels run at once, in softirq or not; a hook
/// past them leaves its work to the listener's work item. The rule check keeps a rule
/// set within that depth, but not the mix of old and new rules a rule set replacement
/// passes through: this bounds the recursion in every state.
///
/// # Invariants
///
/// While it exists, BH is disabled on this CPU and the CPU's nesting count includes it.
struct Nest(PhantomData<*mut ()>);

impl Nest {
    fn enter() -> Option<Self> {
        let max = crate::abi::limits::MAX_CHAIN_DEPTH as core::ffi::c_uint;
        // SAFETY: no precondition (callable in process and softirq context, IRQs on).
        let entered = unsafe { shim::oq_nest_enter(max) };
        // INVARIANT: made only if BH is disabled and the count includes this level (not
        // `then_some`, which would make one, and drop it, either way).
        entered.then(|| Nest(PhantomData))
    }
}

impl Drop for Nest {
    fn drop(&mut self) {
        // SAFETY: `self` entered a level on this CPU with BH disabled (type invariant),
        // and is dropped on the same CPU (BH disabled since, and `Nest` is not `Send`).
        unsafe { shim::oq_nest_exit() };
    }
}

impl LockedChild<'_> {
    /// Hands the child's data to the forwarder of the module listener it waits in, then
    /// to whoever reads the child. A forwarder that hands the child over to another
    /// module listener (a chain into a content rule) has that listener's forwarder look at
    /// the same data next; the chain's depth bounds the loop, and the bound is kept even if
    /// the rules change meanwhile.
    fn data_ready<T: Forwarder>(&self) {
        let sk = self.sk.as_ptr();
        let _rcu = rcu::read_lock();
        for _ in 0..=crate::abi::limits::MAX_CHAIN_DEPTH {
            // SAFETY: `sk` is valid and locked (type invariant); the lock serializes this
            // read with hand-overs, which change the context only under it.
            let ctx = unsafe { shim::oq_sk_hook_ctx(sk) }.cast::<ModuleListener<T>>();
            // SAFETY: a non-NULL `sk_user_data` on a child with this hook points to the
            // pinned `ModuleListener<T>` in whose queue the child waits (type invariant).
            // That listener's `drop` unhooks its children only after an RCU grace period,
            // and frees itself after another one, so it outlives this read section.
            let outcome = match unsafe { ctx.as_ref() } {
                Some(this) => this.fwd.child_data(this, self),
                None => ChildOutcome::Release,
            };
            match outcome {
                ChildOutcome::Release => {
                    // SAFETY: `sk` is a valid child; give it back the default callback (if
                    // it still has ours), deliver.
                    unsafe { shim::oq_child_data_ready(sk, hook::<T>) };
                    return;
                }
                ChildOutcome::Keep => break,
                ChildOutcome::Again => {}
            }
        }
        // SAFETY: `sk` is a valid child; waking its (absent or new) waiters is harmless. A
        // child still hooked keeps the hook, so its next data is looked at again.
        unsafe { shim::oq_child_default_ready(sk) };
    }
}

impl_has_timer!(impl{T: Forwarder} HasTimer for ModuleListener<T> { self.work });

impl<T: Forwarder> TimerItem for ModuleListener<T> {
    type Ref = Pinned<Self>;

    /// Drains the queue in process context.
    fn run(this: Pinned<Self>) {
        this.kick(true);
    }
}

// SAFETY: a listener lives in a `Pin<KBox<_>>` (`new`); its `drop` cancels the timer last,
// when the hooks that queue it are gone and the run, which only re-queues from inside
// `kick`, cannot (see `drop`); `run` keeps nothing.
unsafe impl<T: Forwarder> CancelsBeforeDrop for ModuleListener<T> {}

impl<T: Forwarder> ModuleListener<T> {
    /// Creates a listener on `port` of `net`, hooked, listening, forwarding with `fwd`.
    pub(crate) fn new(net: NetRef, family: Family, port: u16, fwd: T) -> Result<Pin<KBox<Self>>> {
        let sock = ListenSock::create(net, family, port)?;
        let this = KBox::pin_init(
            pin_init!(Self {
                work <- new_timer!(),
                sock,
                pending: Atomic::new(false),
                draining: Atomic::new(false),
                peek_head: Atomic::new(false),
                fwd,
            }),
            GFP_KERNEL,
        )?;
        let ctx = core::ptr::from_ref::<Self>(&this)
            .cast_mut()
            .cast::<c_void>();
        // SAFETY: the socket is bound but not yet listening, so no child exists yet and
        // every child will inherit the hook. `ctx` is pinned and outlives the hook (type
        // invariant, upheld by `drop`).
        unsafe { shim::oq_sk_install_hook(this.sock.sk(), ctx, hook::<T>) };
        listen(&this.sock)?;
        Ok(this)
    }

    /// Creates a hidden listener of `net` for `family`, hooked, forwarding with `fwd`: it
    /// listens on an ephemeral port and is then taken out of the listening hash, so that
    /// no client and no lookup reaches it. Connections enter it only when the module
    /// moves them there (a prioritized port's parks and refusal queues, `qos_prio.rs`).
    pub(crate) fn new_hidden(net: NetRef, family: Family, fwd: T) -> Result<Pin<KBox<Self>>> {
        let this = Self::new(net, family, 0, fwd)?;
        // SAFETY: the socket is a valid listener of ours. A SYN that reached it in the
        // moment it was hashed makes an ordinary child here, forwarded like the others.
        unsafe { shim::oq_park_unhash(this.sock.sk()) };
        Ok(this)
    }

    /// A counted reference to the listening socket ([`ListenSock::sk_ref`]).
    pub(crate) fn sk_ref(&self) -> ListenRef {
        self.sock.sk_ref()
    }

    /// The socket.
    pub(crate) fn sock(&self) -> &ListenSock {
        &self.sock
    }

    /// Leaves a note for the work item to drain the queue, in process context.
    fn kick_later(&self) {
        // Fully ordered, as in `kick`: a drainer running now either sees the note or
        // the work item runs after it.
        self.pending.xchg(true, Full);
        self.defer_now();
    }

    /// Has the work item drain the queue, looking at the heads' data, after the forwarder
    /// held it ([`Drained::Held`]): children whose data came meanwhile are not seen by
    /// their hooks again.
    pub(crate) fn resume(&self) {
        self.peek_head.store(true, Relaxed);
        self.kick_later();
    }

    /// Runs the forwarder, serializing drainers: whoever finds the listener busy leaves a
    /// note (`pending`) that the running drainer picks up before it lets go.
    fn kick(&self, process: bool) {
        // A fully ordered exchange, not a plain store: the note must be visible before
        // this context looks at `draining` (see `run`).
        self.pending.xchg(true, Full);
        self.run(process, None, None);
    }

    /// Takes the drainer role, runs `first` (if given) and then the forwarder's drain
    /// while work is pending. Returns `false` if `first` could not run because another
    /// context is draining.
    ///
    /// Two contexts meet here: a kicker writes `pending` and then reads `draining` (its
    /// `cmpxchg` fails), a drainer writes `draining` and then reads `pending`. That is the
    /// store-buffering pattern: with a release store and an acquire load both could read
    /// the old value, and the last connection of a burst would wait in the queue with
    /// nobody to move it (no timer runs for address rules). Both writes are therefore
    /// fully ordered exchanges (`kick`, and the release of the role below), so at least
    /// one of the two sees the other's write: the kicker takes the role, or the drainer
    /// goes round again.
    ///
    /// The work is bounded per call: at most [`RUN_ROUNDS`] drains (each handles at most
    /// `HOOK_BUDGET` connections). Past that the rest goes to the work item, so a burst
    /// cannot keep one softirq invocation (or one work item run) busy indefinitely.
    fn run(
        &self,
        process: bool,
        locked: Option<&LockedChild<'_>>,
        mut first: Option<&mut dyn FnMut(&DrainCx<'_>) -> Drained>,
    ) -> bool {
        let mut rounds = 0;
        loop {
            if self.draining.cmpxchg(false, true, Full).is_err() {
                return first.is_none();
            }
            let cx = DrainCx {
                process,
                locked,
                handed_over: Cell::new(false),
            };
            let mut outcome = Drained::Empty;
            if let Some(f) = first.take() {
                outcome = f(&cx);
                rounds += 1;
            }
            while outcome != Drained::Defer && self.pending.xchg(false, Full) {
                if rounds >= RUN_ROUNDS {
                    // Out of budget: leave the note for the work item.
                    self.pending.xchg(true, Full);
                    outcome = Drained::Defer;
                    break;
                }
                outcome = self.fwd.drain(self, &cx);
                rounds += 1;
            }
            self.draining.xchg(false, Full);
            match outcome {
                Drained::Defer => {
                    self.defer_now();
                    return true;
                }
                Drained::Wait(ms) => self.defer_at(ms),
                Drained::Empty | Drained::Held => {}
            }
            if !self.pending.load(Relaxed) {
                return true;
            }
            if rounds >= RUN_ROUNDS {
                self.defer_now();
                return true;
            }
        }
    }

    /// Runs `f` as this listener's drainer, on behalf of `child`, whose hook is running.
    /// If another context is draining, asks the work item to look at the queue head
    /// instead and returns `false`.
    pub(crate) fn drain_for(
        &self,
        child: &LockedChild<'_>,
        f: &mut dyn FnMut(&DrainCx<'_>) -> Drained,
    ) -> bool {
        if self.run(false, Some(child), Some(f)) {
            return true;
        }
        self.peek_head.store(true, Relaxed);
        self.defer_now();
        false
    }

    /// Hands the rest of the queue to process context, now.
    fn defer_now(&self) {
        Timer::<Self>::now(Pinned::new(self));
    }

    /// Has the queue looked at again in `ms` milliseconds (or sooner, if already asked).
    fn defer_at(&self, ms: u32) {
        Timer::<Self>::at(Pinned::new(self), ms);
    }

    /// Returns the queue head and its addresses. With `release`, the inherited hook is
    /// removed from the child first (it is about to leave the queue).
    pub(crate) fn queue_head(&self, _cx: &DrainCx<'_>, release: bool) -> Option<(QueueHead, Peer)> {
        let mut peer = Peer::default();
        // SAFETY: the socket is valid; the shim reads the head under the queue lock.
        let req = unsafe { shim::oq_queue_head(self.sock.sk(), &mut peer, hook::<T>, release) };
        NonNull::new(req).map(|req| {
            (
                QueueHead {
                    req,
                    child: peer.child,
                },
                peer,
            )
        })
    }

    /// Moves `child` to the head of the queue, so that the drainer handles it next.
    pub(crate) fn promote(&self, _cx: &DrainCx<'_>, child: &LockedChild<'_>) -> bool {
        // SAFETY: both sockets are valid; `_cx` proves we are the drainer, the only
        // context that may change the head.
        unsafe { shim::oq_queue_promote(self.sock.sk(), child.sk.as_ptr()) }
    }

    /// Whether a child's hook asked the drainer to look at the head's data.
    pub(crate) fn take_peek_head(&self) -> bool {
        self.peek_head.xchg(false, Full)
    }

    /// Asks a later (process context) drain to look at the head's data.
    pub(crate) fn want_peek_head(&self) {
        self.peek_head.store(true, Relaxed);
    }

    /// The socket cookie of the head's connection (unique, never 0), or 0 if it has no
    /// socket yet.
    pub(crate) fn head_cookie(&self, _cx: &DrainCx<'_>, head: &QueueHead) -> u64 {
        head.child.map_or(0, |child| {
            // SAFETY: the child is the head of our queue and stays there, allocated,
            // while we drain (`_cx`: only the drainer removes the head).
            unsafe { shim::oq_sock_cookie(child.as_ptr()) }
        })
    }

    /// Feeds the head's first data to `feed`, locking the child: process context only.
    /// `None` if the drain runs in softirq or the child cannot be examined.
    pub(crate) fn peek_head(
        &self,
        cx: &DrainCx<'_>,
        head: &QueueHead,
        skip: u32,
        max: u32,
        mut feed: impl FnMut(&[u8]) -> bool,
    ) -> Option<PeekEnd> {
        let child = head.child?;
        if !cx.process {
            return None;
        }
        let mut f: &mut dyn FnMut(&[u8]) -> bool = &mut feed;
        // SAFETY: process context (`cx.process`); the child is the head of our queue and
        // stays there, allocated, while we drain (`cx`: only the drainer removes the head).
        let flags = unsafe {
            shim::oq_head_peek(
                child.as_ptr(),
                skip,
                max,
                feed_trampoline,
                core::ptr::from_mut(&mut f).cast(),
            )
        };
        PeekEnd::from_shim(flags)
    }

    /// Moves the head into `dst`'s accept queue, out of the module.
    pub(crate) fn move_head(
        &self,
        _cx: &DrainCx<'_>,
        head: &QueueHead,
        dst: &Target<'_>,
    ) -> Result<Moved, MoveError> {
        self.sock.move_head(head, dst, hook::<T>, None)
    }

    /// Moves the head into `dst`'s accept queue and, if `dst` is a module listener, hands
    /// it over: the child keeps the hook and `dst`'s forwarder looks at the data it already
    /// has. That needs the child's lock: the drainer holds it when it runs from the head's
    /// own hook (the hook then delivers the data, see [`DrainCx::handed_over`]), process
    /// context takes it. Otherwise the move fails with [`MoveError::Process`].
    pub(crate) fn hand_over_head(
        &self,
        cx: &DrainCx<'_>,
        head: &QueueHead,
        dst: &Target<'_>,
    ) -> Result<Moved, MoveError> {
        if let Some(c) = cx.locked.filter(|c| head.is(c)) {
            let moved = self.sock.move_head(head, dst, hook::<T>, Some(c))?;
            if moved == Moved::HandedOver {
                cx.handed_over.set(true);
            }
            return Ok(moved);
        }
        if !cx.process {
            return Err(MoveError::Process);
        }
        let sk = head.child.ok_or(MoveError::Other)?;
        // SAFETY: process context (`cx.process`); the child is the head of our queue and
        // stays there, allocated, until we move it (`cx`: only the drainer removes the
        // head). The shim takes a reference, so it stays allocated until the unlock below
        // even once moved on.
        if !unsafe { shim::oq_child_lock(sk.as_ptr()) } {
            return Err(MoveError::Other);
        }
        // INVARIANT: locked by this CPU just above, owned by no process (checked by the
        // shim), until the unlock below.
        let locked = LockedChild {
            sk,
            _lock: PhantomData,
        };
        let moved = self.sock.move_head(head, dst, hook::<T>, Some(&locked));
        if moved == Ok(Moved::HandedOver) {
            locked.data_ready::<T>();
        }
        // SAFETY: locked by `oq_child_lock` above; `locked` is not used after this.
        unsafe { shim::oq_child_unlock(sk.as_ptr()) };
        moved
    }

    /// Moves `child` (not the head) into `dst`'s accept queue. With `hand_over` and if
    /// `dst` is a module listener, `dst`'s forwarder is to look at the child's data next:
    /// [`ChildOutcome::Again`].
    pub(crate) fn move_child(
        &self,
        child: &LockedChild<'_>,
        dst: &Target<'_>,
        hand_over: bool,
    ) -> Result<Moved, MoveError> {
        self.sock.move_child(child, dst, hook::<T>, hand_over)
    }

    /// Accepts the head and resets it (RST). Process context only.
    pub(crate) fn refuse_head(&self, cx: &DrainCx<'_>) -> Result {
        if !cx.process {
            return Err(EAGAIN);
        }
        // The head leaves the queue now: take our hook off it first.
        self.queue_head(cx, true);
        self.sock.refuse_head()
    }
}

#[pinned_drop]
impl<T: Forwarder> PinnedDrop for ModuleListener<T> {
    fn drop(self: Pin<&mut Self>) {
        let sk = self.sock.sk();
        // SAFETY: `sk` is valid; this restores the default callback if it is still ours and
        // clears `sk_user_data`, so no new child inherits the hook and no new listener
        // hook invocation can find `self`.
        unsafe { shim::oq_sk_restore_hook(sk, hook::<T>) };
        // Children are cloned and queued inside one RCU read section: after this, every
        // child that inherited the hook is in the queue.
        rcu::synchronize_rcu();
        // Unhook them, so none outlives `self` (or the module) with a pointer into it;
        // `sock_release` resets them later.
        // SAFETY: `sk` is valid.
        unsafe { shim::oq_queue_reset_children(sk, hook::<T>) };
        // Hook invocations (listener's and children's) already running finish within a
        // grace period.
        rcu::synchronize_rcu();
        // After this the timer is neither queued nor running. Nothing can queue it again:
        // the hooks are gone, and the run only re-queues itself from inside `kick`, which
        // the cancel waits for and then prevents.
        self.work.cancel_sync();
    }
}
