// SPDX-License-Identifier: GPL-2.0

//! The module's one C boundary: every function of `qos_shim.c` that the Rust code calls,
//! declared once as `qos_shim.h` declares it, and the types shared with it.
//!
//! Owns the extern declarations, the callback types the shim takes, and `Peer` (the
//! mirror of `struct oq_peer`). Imports nothing of the module but the shared leaf
//! `addr`. Every other module file reaches C through here (`use crate::qos_ffi as
//! shim;`), and nothing here calls back up.

use core::{ffi::c_void, ptr::NonNull};
use kernel::bindings;

/// A socket callback the shim installs (the module listener's `sk_data_ready` hook).
pub(crate) type Hook = unsafe extern "C" fn(*mut bindings::sock);
/// Takes the bytes the shim peeks at in a connection's receive queue; returns whether
/// it wants more.
pub(crate) type Feed = unsafe extern "C" fn(*mut c_void, *const u8, u32) -> bool;

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
    age_ms: u32,
    pad2: u32,
    pub(crate) child: Option<NonNull<bindings::sock>>,
    raddr: [u8; 16],
    laddr: [u8; 16],
}

impl Peer {
    /// Milliseconds since the connection's handshake.
    pub(crate) fn age_ms(&self) -> u32 {
        self.age_ms
    }

    /// Whether the connection is an IPv4 one (`AF_INET`; v4-mapped ones are IPv6).
    pub(crate) fn is_v4(&self) -> bool {
        u32::from(self.family) == bindings::AF_INET
    }

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

/// `enum oq_move_result` of `qos_shim.h`: what moving a connection did. The values are
/// checked against the header by `rust/tests/shim_abi.rs`.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MoveResult {
    /// `OQ_MOVE_OK`: moved out of the module, into a server's queue.
    Ok = 0,
    /// `OQ_MOVE_RACE`: another context changed the queue head.
    Race = 1,
    /// `OQ_MOVE_NOT_LISTENING`: no listener on the outgoing port, or it is closing.
    NotListening = 2,
    /// `OQ_MOVE_FULL`: the target's accept queue is full.
    Full = 3,
    /// `OQ_MOVE_FAMILY`: the target cannot take a socket of this family.
    Family = 4,
    /// `OQ_MOVE_FASTOPEN`: a Fast Open request.
    Fastopen = 5,
    /// `OQ_MOVE_NETNS`: the namespace is going away.
    Netns = 6,
    /// `OQ_MOVE_LOOP`: the outgoing port is the module's own listener.
    Loop = 7,
    /// `OQ_MOVE_HEAD`: the connection is at its queue's head, which only the drainer moves.
    Head = 8,
    /// `OQ_MOVE_HANDED`: moved, and handed over to a module listener's rule.
    Handed = 9,
}

impl MoveResult {
    const ALL: [MoveResult; 10] = [
        MoveResult::Ok,
        MoveResult::Race,
        MoveResult::NotListening,
        MoveResult::Full,
        MoveResult::Family,
        MoveResult::Fastopen,
        MoveResult::Netns,
        MoveResult::Loop,
        MoveResult::Head,
        MoveResult::Handed,
    ];

    /// The result a shim move function returned; `None` for a value the header does not
    /// define.
    pub(crate) fn from_c(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|r| *r as i32 == code)
    }
}

/// `OQ_PEEK_FIN` of `qos_shim.h`: the client has closed its side. (The peek flags the
/// module reads; `OQ_PEEK_STOP` it does not. Checked by `rust/tests/shim_abi.rs`.)
pub(crate) const OQ_PEEK_FIN: i32 = 1;
/// `OQ_PEEK_FULL`: the byte limit was reached.
pub(crate) const OQ_PEEK_FULL: i32 = 2;
/// `OQ_PEEK_BUSY`: the child could not be examined.
pub(crate) const OQ_PEEK_BUSY: i32 = 8;

// The bindings contain zero-sized placeholder structs (`its_array`), as in the kernel's own
// `bindings` crate, which allows the same lint.
#[allow(improper_ctypes)]
unsafe extern "C" {
    // Group timers (qos_actuators.rs).
    pub(crate) fn oq_now_ns() -> u64;
    pub(crate) fn oq_work_in(dw: *mut bindings::delayed_work, ms: u32) -> bool;

    // Per-namespace state (qos_classifier.rs).
    pub(crate) fn oq_net_generic(net: *const bindings::net, id: core::ffi::c_uint) -> *mut c_void;

    // Generic netlink (qos_netlink.rs).
    pub(crate) fn oq_genl_info_net(info: *const bindings::genl_info) -> *mut bindings::net;
    pub(crate) fn oq_genl_info_payload(
        info: *const bindings::genl_info,
        len: *mut u32,
    ) -> *const c_void;
    pub(crate) fn oq_cb_net(cb: *const bindings::netlink_callback) -> *mut bindings::net;
    pub(crate) fn oq_cb_portid(cb: *const bindings::netlink_callback) -> u32;
    pub(crate) fn oq_cb_seq(cb: *const bindings::netlink_callback) -> u32;
    pub(crate) fn oq_cb_args(cb: *mut bindings::netlink_callback) -> *mut core::ffi::c_long;
    pub(crate) fn oq_cb_attr(
        cb: *mut bindings::netlink_callback,
        ty: i32,
    ) -> *const bindings::nlattr;
    pub(crate) fn oq_cb_family(cb: *mut bindings::netlink_callback)
        -> *const bindings::genl_family;
    pub(crate) fn oq_cb_extack(
        cb: *mut bindings::netlink_callback,
    ) -> *mut bindings::netlink_ext_ack;
    pub(crate) fn oq_skb_len(skb: *const bindings::sk_buff) -> u32;
    pub(crate) fn oq_genlmsg_end(skb: *mut bindings::sk_buff, hdr: *mut c_void);
    pub(crate) fn oq_genlmsg_cancel(skb: *mut bindings::sk_buff, hdr: *mut c_void);
    pub(crate) fn oq_nla_nest_start(skb: *mut bindings::sk_buff, ty: i32) -> *mut bindings::nlattr;
    pub(crate) fn oq_nla_nest_end(skb: *mut bindings::sk_buff, start: *mut bindings::nlattr);
    pub(crate) fn oq_nla_nest_cancel(skb: *mut bindings::sk_buff, start: *mut bindings::nlattr);

    // Sensors: socket operations, waiting, rescans (qos_sensor.rs).
    pub(crate) fn oq_port_listeners(
        net: *mut bindings::net,
        port: u16,
        out: *mut *mut bindings::sock,
        max: i32,
    ) -> i32;
    pub(crate) fn oq_sock_put(sk: *mut bindings::sock);
    pub(crate) fn oq_sock_hold(sk: *mut bindings::sock);
    pub(crate) fn oq_sock_wrap(
        sk: *mut bindings::sock,
        expect: *const bindings::proto_ops,
        ops: *const bindings::proto_ops,
        rec: *const c_void,
    ) -> bool;
    pub(crate) fn oq_sock_unwrap(
        sk: *mut bindings::sock,
        rec: *const c_void,
        ours: *const bindings::proto_ops,
        orig: *const bindings::proto_ops,
    ) -> bool;
    pub(crate) fn oq_sk_read_lock(sk: *mut bindings::sock);
    pub(crate) fn oq_sk_read_unlock(sk: *mut bindings::sock);
    pub(crate) fn oq_sock_record(
        sock: *mut bindings::socket,
        ops: *const bindings::proto_ops,
    ) -> *mut c_void;
    pub(crate) fn oq_socket_set_ops(sock: *mut bindings::socket, ops: *const bindings::proto_ops);
    pub(crate) fn oq_accept_delay_ns(sk: *const bindings::sock) -> u64;
    pub(crate) fn oq_kick_waiters(sk: *mut bindings::sock);
    pub(crate) fn oq_ops_alloc(orig: *const bindings::proto_ops) -> *mut bindings::proto_ops;
    pub(crate) fn oq_ops_free(ops: *mut bindings::proto_ops);
    pub(crate) fn oq_ops_neutralize(
        ours: *mut bindings::proto_ops,
        orig: *const bindings::proto_ops,
    );
    pub(crate) fn oq_replaces_ops(v6: bool, level: i32, optname: i32) -> bool;
    pub(crate) fn oq_name_stuck_tasks() -> i32;
    pub(crate) fn oq_tasks_rcu_available() -> bool;
    pub(crate) fn oq_synchronize_rcu_tasks();
    pub(crate) fn oq_sk_has_user_data(sk: *const bindings::sock) -> bool;
    pub(crate) fn oq_sk_family(sk: *const bindings::sock) -> u16;
    pub(crate) fn oq_sk_ack_backlog(sk: *const bindings::sock) -> u32;
    pub(crate) fn oq_queue_oldest_ns(lsk: *mut bindings::sock) -> u64;
    pub(crate) fn oq_inet_stream_ops(v6: bool) -> *const bindings::proto_ops;
    pub(crate) fn oq_jiffies() -> core::ffi::c_ulong;
    pub(crate) fn oq_hz() -> core::ffi::c_ulong;
    pub(crate) fn oq_work_now(dw: *mut bindings::delayed_work) -> bool;
    pub(crate) fn oq_work_at(dw: *mut bindings::delayed_work, ms: u32) -> bool;
    pub(crate) fn oq_ns_to_jiffies(ns: u64) -> core::ffi::c_long;
    pub(crate) fn oq_sock_timeo(
        sk: *mut bindings::sock,
        send: bool,
        nonblock: bool,
    ) -> core::ffi::c_long;
    pub(crate) fn oq_accept_queue_empty(sk: *mut bindings::sock) -> bool;
    pub(crate) fn oq_sk_wait(
        sk: *mut bindings::sock,
        timeo: *mut core::ffi::c_long,
        ready: unsafe extern "C" fn(*mut c_void) -> core::ffi::c_long,
        ctx: *mut c_void,
    ) -> i32;
    pub(crate) fn oq_sk_wake(sk: *mut bindings::sock, out: bool);
    pub(crate) fn oq_accept_nonblock(arg: *mut bindings::proto_accept_arg, set: bool) -> bool;
    pub(crate) fn oq_msg_dontwait(msg: *const bindings::msghdr) -> bool;
    pub(crate) fn oq_msg_left(msg: *const bindings::msghdr) -> usize;
    pub(crate) fn oq_msg_limit(msg: *mut bindings::msghdr, n: usize) -> usize;
    pub(crate) fn oq_msg_unlimit(msg: *mut bindings::msghdr, cut: usize);
    pub(crate) fn oq_msg_peek(msg: *const bindings::msghdr, buf: *mut c_void, n: usize) -> usize;
    pub(crate) fn oq_sk_net(sk: *const bindings::sock) -> *mut bindings::net;
    pub(crate) fn oq_poll_bits(out: bool) -> bindings::__poll_t;
    pub(crate) fn oq_sk_same_owner(a: *const bindings::sock, b: *const bindings::sock) -> bool;
    pub(crate) fn oq_iter_read_back(
        before: *const bindings::iov_iter,
        buf: *mut c_void,
        n: usize,
    ) -> usize;
    pub(crate) fn oq_ftp_data_timeout_ms() -> core::ffi::c_uint;

    // The socket core: module listeners, queues, moving connections (qos_sock.rs).
    pub(crate) fn oq_listen_sock_create(
        net: *mut bindings::net,
        family: i32,
        port: u16,
        v6only: bool,
        res: *mut *mut bindings::socket,
    ) -> i32;
    pub(crate) fn oq_socket_sk(sock: *mut bindings::socket) -> *mut bindings::sock;
    pub(crate) fn oq_sk_install_hook(sk: *mut bindings::sock, ctx: *mut c_void, hook: Hook);
    pub(crate) fn oq_sk_restore_hook(sk: *mut bindings::sock, hook: Hook);
    pub(crate) fn oq_sk_hook_ctx(sk: *mut bindings::sock) -> *mut c_void;
    pub(crate) fn oq_sk_is_listener(sk: *const bindings::sock) -> bool;
    pub(crate) fn oq_child_data_ready(child: *mut bindings::sock, hook: Hook);
    pub(crate) fn oq_child_default_ready(child: *mut bindings::sock);
    pub(crate) fn oq_child_peer(child: *const bindings::sock, peer: *mut Peer);
    pub(crate) fn oq_queue_head(
        lsk: *mut bindings::sock,
        peer: *mut Peer,
        hook: Hook,
        release: bool,
    ) -> *mut bindings::request_sock;
    pub(crate) fn oq_queue_promote(lsk: *mut bindings::sock, child: *mut bindings::sock) -> bool;
    pub(crate) fn oq_child_peek(
        child: *mut bindings::sock,
        skip: u32,
        max: u32,
        feed: Feed,
        ctx: *mut c_void,
    ) -> i32;
    pub(crate) fn oq_head_peek(
        child: *mut bindings::sock,
        skip: u32,
        max: u32,
        feed: Feed,
        ctx: *mut c_void,
    ) -> i32;
    pub(crate) fn oq_queue_reset_children(lsk: *mut bindings::sock, hook: Hook);
    pub(crate) fn oq_sock_cookie(sk: *mut bindings::sock) -> u64;
    pub(crate) fn oq_lookup_listener(
        src: *const bindings::sock,
        peer: *const Peer,
        port: u16,
    ) -> *mut bindings::sock;
    pub(crate) fn oq_move_head(
        src: *mut bindings::sock,
        req: *mut bindings::request_sock,
        dst: *mut bindings::sock,
        hook: Hook,
        hand_over: bool,
    ) -> i32;
    pub(crate) fn oq_move_child(
        src: *mut bindings::sock,
        child: *mut bindings::sock,
        dst: *mut bindings::sock,
        hook: Hook,
        hand_over: bool,
    ) -> i32;
    pub(crate) fn oq_sk_module_ctx(sk: *mut bindings::sock, hook: Hook) -> *mut c_void;
    pub(crate) fn oq_park_unhash(sk: *mut bindings::sock);
    pub(crate) fn oq_park_peek(
        lsk: *mut bindings::sock,
        tail: bool,
        peer: *mut Peer,
    ) -> *mut bindings::request_sock;
    pub(crate) fn oq_park_move(
        src: *mut bindings::sock,
        child: *mut bindings::sock,
        dst: *mut bindings::sock,
    ) -> i32;
    pub(crate) fn oq_child_lock(child: *mut bindings::sock) -> bool;
    pub(crate) fn oq_child_unlock(child: *mut bindings::sock);
    pub(crate) fn oq_sock_no_linger(sock: *mut bindings::socket);
    pub(crate) fn oq_nest_enter(max: core::ffi::c_uint) -> bool;
    pub(crate) fn oq_nest_exit();
}
