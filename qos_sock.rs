// SPDX-License-Identifier: GPL-2.0

//! Module-owned listening sockets with the forwarding hook: the audited unsafe core.
//!
//! Everything that touches `struct sock`, the accept queue or the socket callbacks is in
//! this file (and, for static inlines and macros, in `qos_shim.c`). The rest of the module
//! is safe Rust built on [`ModuleListener`]. See `Documentation/design.md` for the
//! reasoning in prose; the `// SAFETY:` comments below point at it.

use core::{ffi::c_void, marker::PhantomData, ptr::NonNull};
use kernel::{
    bindings,
    error::to_result,
    prelude::*,
    sync::{
        atomic::{Atomic, Full, Relaxed},
        rcu,
    },
    types::Opaque,
};

/// Prototypes of `qos_shim.c` (see `qos_shim.h`).
// The bindings contain zero-sized placeholder structs (`its_array`), as in the kernel's own
// `bindings` crate, which allows the same lint.
#[allow(improper_ctypes)]
mod shim {
    use super::Peer;
    use kernel::bindings;

    pub(super) type Hook = unsafe extern "C" fn(*mut bindings::sock);
    pub(super) type WorkFn = unsafe extern "C" fn(*mut bindings::work_struct);

    unsafe extern "C" {
        pub(super) fn oq_listen_sock_create(
            net: *mut bindings::net,
            family: i32,
            port: u16,
            v6only: bool,
            res: *mut *mut bindings::socket,
        ) -> i32;
        pub(super) fn oq_socket_sk(sock: *mut bindings::socket) -> *mut bindings::sock;
        pub(super) fn oq_sk_install_hook(sk: *mut bindings::sock, ctx: *mut c_void, hook: Hook);
        pub(super) fn oq_sk_restore_hook(sk: *mut bindings::sock, hook: Hook);
        pub(super) fn oq_sk_hook_ctx(sk: *mut bindings::sock) -> *mut c_void;
        pub(super) fn oq_sk_is_listener(sk: *const bindings::sock) -> bool;
        pub(super) fn oq_child_data_ready(child: *mut bindings::sock, hook: Hook);
        pub(super) fn oq_sk_ack_backlog(sk: *const bindings::sock) -> u32;
        pub(super) fn oq_queue_head(
            lsk: *mut bindings::sock,
            peer: *mut Peer,
            hook: Hook,
        ) -> *mut bindings::request_sock;
        pub(super) fn oq_queue_reset_children(lsk: *mut bindings::sock, hook: Hook);
        pub(super) fn oq_lookup_listener(
            src: *const bindings::sock,
            peer: *const Peer,
            port: u16,
        ) -> *mut bindings::sock;
        pub(super) fn oq_move_head(
            src: *mut bindings::sock,
            req: *mut bindings::request_sock,
            dst: *mut bindings::sock,
        ) -> i32;
        pub(super) fn oq_sock_no_linger(sock: *mut bindings::socket);
        pub(super) fn oq_init_work(work: *mut bindings::work_struct, f: WorkFn);
        pub(super) fn oq_schedule_work(work: *mut bindings::work_struct) -> bool;
    }
    use core::ffi::c_void;
}

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

/// The addresses of a connection waiting in a module listener's queue.
///
/// Mirrors `struct oq_peer` in `qos_shim.h`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Peer {
    family: u16,
    rport: u16,
    lport: u16,
    pad: u16,
    raddr: [u8; 16],
    laddr: [u8; 16],
}

impl Peer {
    /// The client address, for classification.
    pub(crate) fn client(&self) -> crate::addr::Client {
        if u32::from(self.family) == bindings::AF_INET {
            let a = [self.raddr[0], self.raddr[1], self.raddr[2], self.raddr[3]];
            crate::addr::Client::V4(u32::from_be_bytes(a))
        } else {
            crate::addr::Client::V6(self.raddr)
        }
    }
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
}

impl MoveError {
    fn from_shim(code: i32) -> Result<(), MoveError> {
        match code {
            0 => Ok(()),
            1 => Err(MoveError::Race),
            2 => Err(MoveError::NoListener),
            3 => Err(MoveError::Full),
            4 => Err(MoveError::Family),
            7 => Err(MoveError::Loop),
            _ => Err(MoveError::Other),
        }
    }
}

/// The head of a module listener's accept queue, as seen by the single drainer.
///
/// Only a token: it is compared, never dereferenced, by the Rust side.
pub(crate) struct QueueHead(NonNull<bindings::request_sock>);

/// A listening socket found by [`ListenSock::lookup`], valid for the RCU read section.
pub(crate) struct Target<'a> {
    sk: NonNull<bindings::sock>,
    _rcu: PhantomData<&'a rcu::Guard>,
}

/// Policy of a module listener: what to do with the connections it receives.
pub(crate) trait Forwarder: Send + Sync + Sized + 'static {
    /// Handles the connections waiting in `listener`'s queue.
    ///
    /// Called from the hook (softirq, `process == false`) and from the listener's work
    /// item (process context, `process == true`). Never called concurrently for one
    /// listener: [`ModuleListener`] serializes drainers, so the queue head can only be
    /// removed by the caller.
    fn drain(&self, listener: &ModuleListener<Self>, process: bool) -> Drained;
}

/// How a drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Drained {
    /// The queue is empty.
    Empty,
    /// The rest needs process context (a refusal, or the budget ran out).
    Defer,
}

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
        _g: &'a rcu::Guard,
        peer: &Peer,
        port: u16,
    ) -> Option<Target<'a>> {
        // SAFETY: `sk()` is valid; the result is a listener, freed only after an RCU grace
        // period (SOCK_RCU_FREE), and `_g` keeps the read section open for `'a`.
        let sk = unsafe { shim::oq_lookup_listener(self.sk(), peer, port) };
        NonNull::new(sk).map(|sk| Target {
            sk,
            _rcu: PhantomData,
        })
    }

    /// Moves `head` into `dst`'s accept queue and wakes `dst`'s waiters.
    pub(crate) fn move_head(&self, head: &QueueHead, dst: Target<'_>) -> Result<(), MoveError> {
        // SAFETY: both sockets are valid (type invariant, RCU for `dst`); the shim takes
        // both queue locks and checks under them that `head` is still this queue's head.
        MoveError::from_shim(unsafe {
            shim::oq_move_head(self.sk(), head.0.as_ptr(), dst.sk.as_ptr())
        })
    }

    /// Accepts the queue head and resets it (RST). Process context only.
    ///
    /// Drainers are serialized and only drainers remove from this queue, so the
    /// connection accepted here is the head the caller decided to refuse.
    pub(crate) fn refuse_head(&self) -> Result {
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

    /// An opaque key identifying the namespace (its address).
    pub(crate) fn key(self) -> usize {
        self.0.as_ptr() as usize
    }
}

/// A module listener: a [`ListenSock`] whose connections are handed to a [`Forwarder`].
///
/// # Invariants
///
/// From `listen()` until `drop`, the socket's `sk_user_data` points to `self` and its
/// `sk_data_ready` is [`hook::<T>`]; `self` is pinned, so that pointer stays valid. `drop`
/// unhooks, waits for an RCU grace period (every hook invocation runs inside an RCU read
/// section) and cancels the work item before `self` goes away.
#[pin_data(PinnedDrop)]
pub(crate) struct ModuleListener<T: Forwarder> {
    #[pin]
    work: Opaque<bindings::work_struct>,
    sock: ListenSock,
    pending: Atomic<bool>,
    draining: Atomic<bool>,
    /// The policy.
    pub(crate) fwd: T,
}

// SAFETY: the work item is only touched through the workqueue API, which is thread safe;
// the other fields are `Send`.
unsafe impl<T: Forwarder> Send for ModuleListener<T> {}
// SAFETY: shared access only reads the socket pointer, uses atomics, or queues the work
// item, all of which are safe from any context.
unsafe impl<T: Forwarder> Sync for ModuleListener<T> {}

/// The forwarding hook, installed as `sk_data_ready` of module listeners.
///
/// # Safety
///
/// Called by the TCP stack with a valid socket: a module listener, or a child cloned
/// from one (children inherit callbacks), inside an RCU read section.
unsafe extern "C" fn hook<T: Forwarder>(sk: *mut bindings::sock) {
    // SAFETY: `sk` is valid (function safety requirement).
    if !unsafe { shim::oq_sk_is_listener(sk) } {
        // A child that inherited the hook: give it back the default callback and deliver.
        // SAFETY: `sk` is a valid child socket.
        unsafe { shim::oq_child_data_ready(sk, hook::<T>) };
        return;
    }
    let _rcu = rcu::read_lock();
    // SAFETY: `sk` is a valid listener.
    let ctx = unsafe { shim::oq_sk_hook_ctx(sk) }.cast::<ModuleListener<T>>();
    if ctx.is_null() {
        return;
    }
    // SAFETY: a non-NULL `sk_user_data` on a listener with this hook points to a pinned
    // `ModuleListener<T>` (type invariant), which is freed only after its `drop` has
    // unhooked and waited for RCU readers like this one.
    let this = unsafe { &*ctx };
    this.kick(false);
}

/// The work item: drains the queue in process context.
///
/// # Safety
///
/// `work` is the `work` field of a live `ModuleListener<T>` (queued only by `defer()`;
/// `drop` cancels it before freeing the listener).
unsafe extern "C" fn work_fn<T: Forwarder>(work: *mut bindings::work_struct) {
    let off = core::mem::offset_of!(ModuleListener<T>, work);
    // SAFETY: `work` is embedded in a `ModuleListener<T>` at offset `off` (see above), and
    // `Opaque<work_struct>` has the layout of `work_struct`.
    let this = unsafe { &*work.cast::<u8>().sub(off).cast::<ModuleListener<T>>() };
    this.kick(true);
}

impl<T: Forwarder> ModuleListener<T> {
    /// Creates a listener on `port` of `net`, hooked, listening, forwarding with `fwd`.
    pub(crate) fn new(net: NetRef, family: Family, port: u16, fwd: T) -> Result<Pin<KBox<Self>>> {
        let sock = ListenSock::create(net, family, port)?;
        let this = KBox::pin_init(
            pin_init!(Self {
                work <- Opaque::ffi_init(|slot: *mut bindings::work_struct| {
                    // SAFETY: `slot` is valid for writes; `INIT_WORK` initializes it fully.
                    unsafe { shim::oq_init_work(slot, work_fn::<T>) }
                }),
                sock,
                pending: Atomic::new(false),
                draining: Atomic::new(false),
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
        // SAFETY: `sock` is a valid bound socket.
        to_result(unsafe {
            bindings::kernel_listen(
                this.sock.sock.as_ptr(),
                crate::abi::limits::LISTEN_BACKLOG as i32,
            )
        })?;
        Ok(this)
    }

    /// The socket.
    pub(crate) fn sock(&self) -> &ListenSock {
        &self.sock
    }

    /// Runs the forwarder, serializing drainers: whoever finds the listener busy leaves a
    /// note (`pending`) that the running drainer picks up before it lets go.
    fn kick(&self, process: bool) {
        self.pending.store(true, Relaxed);
        loop {
            if self.draining.cmpxchg(false, true, Full).is_err() {
                return;
            }
            let mut outcome = Drained::Empty;
            while self.pending.xchg(false, Full) {
                outcome = self.fwd.drain(self, process);
                if outcome == Drained::Defer {
                    break;
                }
            }
            self.draining.store(false, kernel::sync::atomic::Release);
            if outcome == Drained::Defer {
                self.defer();
                return;
            }
            if !self.pending.load(kernel::sync::atomic::Acquire) {
                return;
            }
        }
    }

    /// Hands the rest of the queue to process context.
    fn defer(&self) {
        // SAFETY: `work` was initialized by `new`; `drop` cancels it before `self` goes.
        unsafe { shim::oq_schedule_work(self.work.get()) };
    }

    /// Returns the queue head and its addresses, with the inherited hook already removed
    /// from the child.
    pub(crate) fn queue_head(&self) -> Option<(QueueHead, Peer)> {
        let mut peer = Peer::default();
        // SAFETY: the socket is valid; the shim reads the head under the queue lock.
        let req = unsafe { shim::oq_queue_head(self.sock.sk(), &mut peer, hook::<T>) };
        NonNull::new(req).map(|r| (QueueHead(r), peer))
    }
}

#[pinned_drop]
impl<T: Forwarder> PinnedDrop for ModuleListener<T> {
    fn drop(self: Pin<&mut Self>) {
        let sk = self.sock.sk();
        // SAFETY: `sk` is valid; this restores the default callback if it is still ours and
        // clears `sk_user_data`, so no new hook invocation can find `self`.
        unsafe { shim::oq_sk_restore_hook(sk, hook::<T>) };
        // Hook invocations already running finish within a grace period.
        rcu::synchronize_rcu();
        // SAFETY: the work item was initialized in `new`; after this it is neither queued
        // nor running, and nothing can queue it again (the hook is gone, and the work
        // only re-queues itself from inside `kick`, which `cancel_work_sync` waits for).
        unsafe { bindings::cancel_work_sync(self.work.get()) };
        // Children still queued carry the hook (inherited at clone); reset them so none
        // outlives the module with a pointer into it. `sock_release` then resets them.
        // SAFETY: `sk` is valid.
        unsafe { shim::oq_queue_reset_children(sk, hook::<T>) };
    }
}
