// SPDX-License-Identifier: GPL-2.0

//! The `openqos` generic netlink family.
//!
//! The family, its operations and its attribute policy are built at load time from the
//! shared ABI (`rust/src/abi.rs`), so the kernel validates exactly what the tools encode.
//! Validation is strict (`resv_start_op` past the last command): unknown attributes,
//! wrong lengths and out-of-range values are refused by the netlink core with an extack
//! message and the offending attribute, before any handler runs. Handlers then check the
//! per-command required attributes and the semantics, again with an extack message.

use crate::{
    abi::{self, attr, cmd, stat, Kind},
    addr::Prefix,
    qos_classifier::{self, reject, Matcher, Rejection, NETS},
    qos_sock::NetRef,
};
use core::{ffi::c_int, ptr::NonNull};
use kernel::{bindings, c_str, prelude::*, ThisModule};

// The bindings contain zero-sized placeholder structs (`its_array`), as in the kernel's own
// `bindings` crate, which allows the same lint.
#[allow(improper_ctypes)]
mod shim {
    use kernel::bindings;

    unsafe extern "C" {
        pub(super) fn oq_genl_info_net(info: *const bindings::genl_info) -> *mut bindings::net;
        pub(super) fn oq_cb_net(cb: *const bindings::netlink_callback) -> *mut bindings::net;
        pub(super) fn oq_cb_portid(cb: *const bindings::netlink_callback) -> u32;
        pub(super) fn oq_cb_seq(cb: *const bindings::netlink_callback) -> u32;
        pub(super) fn oq_cb_args(cb: *mut bindings::netlink_callback) -> *mut core::ffi::c_long;
        pub(super) fn oq_cb_attr(
            cb: *mut bindings::netlink_callback,
            ty: i32,
        ) -> *const bindings::nlattr;
        pub(super) fn oq_cb_family(
            cb: *mut bindings::netlink_callback,
        ) -> *const bindings::genl_family;
        pub(super) fn oq_cb_extack(
            cb: *mut bindings::netlink_callback,
        ) -> *mut bindings::netlink_ext_ack;
        pub(super) fn oq_skb_len(skb: *const bindings::sk_buff) -> u32;
        pub(super) fn oq_genlmsg_end(skb: *mut bindings::sk_buff, hdr: *mut core::ffi::c_void);
        pub(super) fn oq_genlmsg_cancel(skb: *mut bindings::sk_buff, hdr: *mut core::ffi::c_void);
        pub(super) fn oq_nla_nest_start(
            skb: *mut bindings::sk_buff,
            ty: i32,
        ) -> *mut bindings::nlattr;
        pub(super) fn oq_nla_nest_end(skb: *mut bindings::sk_buff, start: *mut bindings::nlattr);
        pub(super) fn oq_nla_nest_cancel(skb: *mut bindings::sk_buff, start: *mut bindings::nlattr);
    }
}

const NLA_HDRLEN: usize = 4;
const N_OPS: usize = cmd::MAX as usize;
const N_ATTRS: usize = attr::MAX as usize + 1;

/// Storage for the family; the kernel keeps pointers into it while registered.
struct Storage {
    family: bindings::genl_family,
    ops: [bindings::genl_ops; N_OPS],
    policy: [bindings::nla_policy; N_ATTRS],
    ranges: [bindings::netlink_range_validation; N_ATTRS],
}

/// The registered family.
///
/// # Invariants
///
/// `storage.family` is registered with the generic netlink core from `register()` until
/// `drop`, and `storage` (boxed, never moved out) holds every table it points to.
pub(crate) struct GenlFamily {
    storage: KBox<Storage>,
}

// SAFETY: after registration the storage is only read (and written by the netlink core
// under its own locking).
unsafe impl Send for GenlFamily {}
// SAFETY: as above.
unsafe impl Sync for GenlFamily {}

impl GenlFamily {
    /// Builds the family from the shared ABI and registers it.
    pub(crate) fn register(module: &'static ThisModule) -> Result<Self> {
        let mut storage = KBox::<Storage>::new_uninit(GFP_KERNEL)?;
        // SAFETY: every field of `Storage` is a plain C structure for which all-zero bytes
        // is a valid (empty) value: integers, raw pointers and optional function pointers.
        let mut storage = unsafe {
            core::ptr::write_bytes(storage.as_mut_ptr(), 0, 1);
            storage.assume_init()
        };
        let s = &mut *storage;
        for p in abi::POLICY.iter() {
            let i = usize::from(p.ty);
            let pol = &mut s.policy[i];
            let (ty, ranged) = match p.kind {
                Kind::U8 => (bindings::NLA_U8, true),
                Kind::U16 => (bindings::NLA_U16, true),
                Kind::U32 => (bindings::NLA_U32, true),
                Kind::U64 => (bindings::NLA_U64, true),
                Kind::Bytes(min, max) => {
                    // For NLA_BINARY the range bounds the payload length.
                    pol.validation_type = bindings::nla_policy_validation_NLA_VALIDATE_RANGE as u8;
                    pol.__bindgen_anon_1.__bindgen_anon_1 =
                        bindings::nla_policy__bindgen_ty_1__bindgen_ty_1 {
                            min: min as i16,
                            max: max as i16,
                        };
                    (bindings::NLA_BINARY, false)
                }
                Kind::Nested => (bindings::NLA_NESTED, false),
                Kind::Reject => (bindings::NLA_REJECT, false),
            };
            pol.type_ = ty as u8;
            if ranged {
                s.ranges[i].min = p.min;
                s.ranges[i].max = p.max;
                pol.validation_type = bindings::nla_policy_validation_NLA_VALIDATE_RANGE_PTR as u8;
                pol.__bindgen_anon_1.range = &s.ranges[i];
            }
        }
        for (i, op) in s.ops.iter_mut().enumerate() {
            let c = i as u8 + 1;
            op.cmd = c;
            if abi::is_mutation(c) {
                op.flags = bindings::GENL_ADMIN_PERM as u8;
            }
            match c {
                cmd::RULE_GET => op.dumpit = Some(dump_rules),
                cmd::RULE_NEW => op.doit = Some(doit::<{ cmd::RULE_NEW }>),
                cmd::RULE_DEL => op.doit = Some(doit::<{ cmd::RULE_DEL }>),
                cmd::COND_NEW => op.doit = Some(doit::<{ cmd::COND_NEW }>),
                cmd::COND_DEL => op.doit = Some(doit::<{ cmd::COND_DEL }>),
                cmd::COND_SET => op.doit = Some(doit::<{ cmd::COND_SET }>),
                cmd::FLUSH => op.doit = Some(doit::<{ cmd::FLUSH }>),
                // A command added to the ABI but not wired here answers EOPNOTSUPP.
                _ => op.doit = Some(doit::<0>),
            }
        }
        let f = &mut s.family;
        for (d, b) in f.name.iter_mut().zip(abi::FAMILY_NAME) {
            *d = *b;
        }
        f.version = u32::from(abi::FAMILY_VERSION);
        f.maxattr = u32::from(attr::MAX);
        f.policy = s.policy.as_ptr();
        f.ops = s.ops.as_ptr();
        f.n_ops = N_OPS as u8;
        // Strict validation for every command (none predates this family).
        f.resv_start_op = cmd::MAX + 1;
        f.set_netnsok(1);
        f.set_parallel_ops(1);
        f.module = module.as_ptr();
        // SAFETY: the family and every table it points to live in `storage`, which is
        // boxed and kept until `drop` unregisters the family.
        kernel::error::to_result(unsafe { bindings::genl_register_family(&mut s.family) })?;
        // INVARIANT: registered just above.
        Ok(Self { storage })
    }
}

impl Drop for GenlFamily {
    fn drop(&mut self) {
        // SAFETY: registered by `register` (type invariant); after this returns no handler
        // runs and the storage may go.
        unsafe { bindings::genl_unregister_family(&self.storage.family) };
    }
}

/// A netlink request being handled by a `doit` handler.
///
/// # Invariants
///
/// `info` is the valid `genl_info` of the request, for the lifetime of the value.
struct Request {
    info: NonNull<bindings::genl_info>,
}

impl Request {
    fn attr(&self, ty: u16) -> Option<NonNull<bindings::nlattr>> {
        // SAFETY: `attrs` has `maxattr + 1` entries (the family's policy) and `ty` is at
        // most `attr::MAX`; `info` is valid (type invariant).
        NonNull::new(unsafe { *self.info.as_ref().attrs.add(usize::from(ty)) })
    }

    fn has(&self, ty: u16) -> bool {
        self.attr(ty).is_some()
    }

    /// Reads an integer attribute that the policy already validated (type and range).
    fn int<T: FromNla>(&self, ty: u16) -> Option<T> {
        // SAFETY: the policy checked that the payload holds a `T`.
        self.attr(ty).map(|a| unsafe { T::read(a) })
    }

    fn bytes16(&self, ty: u16) -> Option<[u8; 16]> {
        // SAFETY: the policy checked the payload is exactly 16 bytes.
        self.attr(ty).map(|a| unsafe {
            a.as_ptr()
                .cast::<u8>()
                .add(NLA_HDRLEN)
                .cast::<[u8; 16]>()
                .read_unaligned()
        })
    }

    /// The payload of a binary attribute (length already checked by the policy).
    fn bytes(&self, ty: u16) -> Option<&[u8]> {
        self.attr(ty).map(|a| {
            // SAFETY: the attribute is valid for the request's lifetime; its header says
            // how many payload bytes follow it.
            unsafe {
                let len = usize::from((*a.as_ptr()).nla_len).saturating_sub(NLA_HDRLEN);
                core::slice::from_raw_parts(a.as_ptr().cast::<u8>().add(NLA_HDRLEN), len)
            }
        })
    }

    fn net(&self) -> Option<NetRef> {
        // SAFETY: `info` is valid; the requesting socket keeps the namespace alive for the
        // duration of the request.
        unsafe { NetRef::new(shim::oq_genl_info_net(self.info.as_ptr())) }
    }

    fn fail(&self, rej: &Rejection, missing: Option<u16>) {
        // SAFETY: `info` is valid; `extack` is NULL or valid; messages are static strings.
        unsafe {
            let ext = self.info.as_ref().extack;
            if ext.is_null() {
                return;
            }
            (*ext)._msg = rej.msg.as_char_ptr();
            if let Some(a) = rej.attr.and_then(|a| self.attr(a)) {
                (*ext).bad_attr = a.as_ptr();
            }
            if let Some(m) = missing {
                (*ext).miss_type = m;
            }
        }
    }
}

/// Integers read from attribute payloads.
trait FromNla: Sized {
    /// # Safety
    ///
    /// `a` must be a valid attribute whose payload holds at least `size_of::<Self>()`
    /// bytes.
    unsafe fn read(a: NonNull<bindings::nlattr>) -> Self;
}

macro_rules! from_nla {
    ($($t:ty),*) => {$(
        impl FromNla for $t {
            unsafe fn read(a: NonNull<bindings::nlattr>) -> Self {
                // SAFETY: guaranteed by the caller.
                unsafe { a.as_ptr().cast::<u8>().add(NLA_HDRLEN).cast::<$t>().read_unaligned() }
            }
        }
    )*};
}
from_nla!(u8, u16, u32);

/// The `doit` handler of command `CMD`.
///
/// # Safety
///
/// Called by the generic netlink core with a valid request.
unsafe extern "C" fn doit<const CMD: u8>(
    _skb: *mut bindings::sk_buff,
    info: *mut bindings::genl_info,
) -> c_int {
    let Some(info) = NonNull::new(info) else {
        return EINVAL.to_errno();
    };
    // INVARIANT: the netlink core passes a valid `info` for the request.
    let req = Request { info };
    match handle(CMD, &req) {
        Ok(()) => 0,
        Err((rej, missing)) => {
            req.fail(&rej, missing);
            rej.err.to_errno()
        }
    }
}

type HandlerResult = Result<(), (Rejection, Option<u16>)>;

fn handle(c: u8, req: &Request) -> HandlerResult {
    let (required, optional) = abi::command_attrs(c);
    for a in required {
        if !req.has(*a) {
            return Err((
                reject(EINVAL, c_str!("missing required attribute"), None),
                Some(*a),
            ));
        }
    }
    for a in 1..=attr::MAX {
        if req.has(a) && !required.contains(&a) && !optional.contains(&a) {
            return Err((
                reject(
                    EINVAL,
                    c_str!("attribute not valid for this command"),
                    Some(a),
                ),
                None,
            ));
        }
    }
    let net = req
        .net()
        .ok_or((reject(EINVAL, c_str!("no network namespace"), None), None))?;
    let port = req.int::<u16>(attr::PORT).unwrap_or(0);
    let mut nets = NETS.lock();
    let r = match c {
        cmd::RULE_NEW => qos_classifier::rule_new(
            &mut nets,
            net,
            port,
            req.int(attr::RULE_TYPE).unwrap_or(0),
            req.int(attr::DEFAULT_PORT).unwrap_or(0),
            req.int(attr::RULE_FLAGS).unwrap_or(0),
            req.int(attr::DATA_TIMEOUT_MS),
        ),
        cmd::RULE_DEL => qos_classifier::rule_del(&mut nets, net, port),
        cmd::COND_NEW | cmd::COND_SET => match parse_matcher(req) {
            Ok(m) => qos_classifier::cond_set(
                &mut nets,
                net,
                port,
                (c == cmd::COND_SET).then(|| req.int(attr::COND_INDEX).unwrap_or(0)),
                m,
                req.int(attr::OUT_PORT).unwrap_or(0),
            ),
            Err(e) => Err(e),
        },
        cmd::COND_DEL => {
            qos_classifier::cond_del(&mut nets, net, port, req.int(attr::COND_INDEX).unwrap_or(0))
        }
        cmd::FLUSH => {
            qos_classifier::flush(&mut nets, net);
            Ok(())
        }
        _ => Err(reject(EOPNOTSUPP, c_str!("unknown command"), None)),
    };
    r.map_err(|e| (e, None))
}

/// The matcher of a condition: exactly one of an IPv4 prefix, an IPv6 prefix, a weight,
/// a string.
fn parse_matcher(req: &Request) -> Result<Matcher, Rejection> {
    let addr = [attr::ADDR4, attr::MASK4, attr::ADDR6, attr::PREFIX6]
        .into_iter()
        .find(|a| req.has(*a));
    let kinds = [
        req.has(attr::WEIGHT).then_some(attr::WEIGHT),
        req.has(attr::PATTERN).then_some(attr::PATTERN),
        addr,
    ];
    if let Some(extra) = kinds.iter().flatten().nth(1) {
        return Err(reject(
            EINVAL,
            c_str!("a condition has one matcher: an address, a weight or a string"),
            Some(*extra),
        ));
    }
    if let Some(w) = req.int::<u16>(attr::WEIGHT) {
        return Ok(Matcher::Weight(w));
    }
    if let Some(p) = req.bytes(attr::PATTERN) {
        if p.contains(&0) {
            return Err(reject(
                EINVAL,
                c_str!("a content string may not contain NUL bytes"),
                Some(attr::PATTERN),
            ));
        }
        let mut v = KVec::with_capacity(p.len(), GFP_KERNEL)?;
        v.extend_from_slice(p, GFP_KERNEL)?;
        return Ok(Matcher::Content(v));
    }
    parse_prefix(req).map(Matcher::Addr)
}

fn parse_prefix(req: &Request) -> Result<Prefix, Rejection> {
    let v4 = req.has(attr::ADDR4) || req.has(attr::MASK4);
    let v6 = req.has(attr::ADDR6) || req.has(attr::PREFIX6);
    match (v4, v6) {
        (true, true) => Err(reject(
            EINVAL,
            c_str!("a condition is either IPv4 (addr4/mask4) or IPv6 (addr6/prefix6)"),
            Some(attr::ADDR6),
        )),
        (false, false) => Err(reject(
            EINVAL,
            c_str!("a condition needs addr4+mask4, addr6+prefix6 or a weight"),
            None,
        )),
        (true, false) => match (req.int::<u32>(attr::ADDR4), req.int::<u32>(attr::MASK4)) {
            (Some(a), Some(m)) => Ok(Prefix::v4(u32::from_be(a), u32::from_be(m))),
            (None, _) => Err(reject(
                EINVAL,
                c_str!("mask4 given without addr4"),
                Some(attr::MASK4),
            )),
            (_, None) => Err(reject(
                EINVAL,
                c_str!("addr4 given without mask4"),
                Some(attr::ADDR4),
            )),
        },
        (false, true) => match (req.bytes16(attr::ADDR6), req.int::<u8>(attr::PREFIX6)) {
            (Some(a), Some(l)) => Prefix::v6(a, l).map_err(|_| {
                reject(
                    EINVAL,
                    c_str!("IPv6 prefix length over 128"),
                    Some(attr::PREFIX6),
                )
            }),
            (None, _) => Err(reject(
                EINVAL,
                c_str!("prefix6 given without addr6"),
                Some(attr::PREFIX6),
            )),
            (_, None) => Err(reject(
                EINVAL,
                c_str!("addr6 given without prefix6"),
                Some(attr::ADDR6),
            )),
        },
    }
}

/// A message being written into a dump skb.
///
/// # Invariants
///
/// `skb` is valid and `hdr` is the header of the message being built in it.
struct Msg {
    skb: *mut bindings::sk_buff,
    hdr: *mut core::ffi::c_void,
}

impl Msg {
    fn put<T>(&self, ty: u16, v: &T) -> Result {
        // SAFETY: `skb` is valid (type invariant); `v` is readable for its size.
        kernel::error::to_result(unsafe {
            bindings::nla_put(
                self.skb,
                i32::from(ty),
                core::mem::size_of::<T>() as i32,
                core::ptr::from_ref(v).cast(),
            )
        })
    }

    fn put_bytes(&self, ty: u16, v: &[u8]) -> Result {
        // SAFETY: `skb` is valid (type invariant); `v` is readable for its length, at
        // most `MAX_PATTERN` bytes here.
        kernel::error::to_result(unsafe {
            bindings::nla_put(self.skb, i32::from(ty), v.len() as i32, v.as_ptr().cast())
        })
    }

    fn put_u64(&self, ty: u16, v: u64) -> Result {
        // SAFETY: as in `put`.
        kernel::error::to_result(unsafe {
            bindings::nla_put_64bit(
                self.skb,
                i32::from(ty),
                8,
                core::ptr::from_ref(&v).cast(),
                i32::from(attr::PAD),
            )
        })
    }

    fn nest(&self, ty: u16, body: impl FnOnce(&Self) -> Result) -> Result {
        // SAFETY: `skb` is valid.
        let start = unsafe { shim::oq_nla_nest_start(self.skb, i32::from(ty)) };
        if start.is_null() {
            return Err(EMSGSIZE);
        }
        let r = body(self);
        // SAFETY: `start` was returned by `nla_nest_start` on this skb; cancelling trims
        // whatever part of the nest was written.
        unsafe {
            if r.is_ok() {
                shim::oq_nla_nest_end(self.skb, start);
            } else {
                shim::oq_nla_nest_cancel(self.skb, start);
            }
        }
        r
    }
}

/// Writes one rule message holding conditions from `first` on; returns the index of the
/// first condition that did not fit (`None`: all fit).
fn put_rule(m: &Msg, rule: &qos_classifier::Rule, first: usize) -> Result<Option<usize>> {
    let policy = rule.shared.policy();
    m.put(attr::PORT, &rule.port)?;
    m.put(attr::RULE_TYPE, &rule.kind)?;
    m.put(attr::DEFAULT_PORT, &policy.default_port)?;
    m.put(attr::RULE_FLAGS, &rule.flags)?;
    if first == 0 {
        let s = &rule.shared.stats;
        m.nest(attr::STATS, |m| {
            m.put_u64(stat::DEFAULT_HITS, s.default_hits.get())?;
            m.put_u64(stat::FORWARDED, s.forwarded.get())?;
            m.put_u64(stat::NO_LISTENER, s.no_listener.get())?;
            m.put_u64(stat::QUEUE_FULL, s.queue_full.get())?;
            m.put_u64(stat::FAMILY_MISMATCH, s.family_mismatch.get())?;
            m.put_u64(stat::OTHER_REFUSED, s.other_refused.get())?;
            m.put_u64(stat::WAITING, rule.waiting())?;
            if rule.timeout_ms.is_some() {
                m.put_u64(stat::TIMED_OUT, s.timed_out.get())?;
                m.put_u64(stat::PENDING_FULL, s.pending_full.get())?;
            }
            Ok(())
        })?;
        if let Some(t) = rule.timeout_ms {
            m.put(attr::DATA_TIMEOUT_MS, &t)?;
            let states = policy.automaton.as_ref().map_or(0, |a| a.states());
            m.put(attr::STATES, &(states as u32))?;
        }
    }
    for (i, c) in policy.conds.iter().enumerate().skip(first) {
        let r = m.nest(attr::COND, |m| {
            m.put(attr::COND_INDEX, &(i as u32 + 1))?;
            match &c.matcher {
                Matcher::Addr(Prefix::V4 { addr, mask }) => {
                    m.put(attr::ADDR4, &addr.to_be())?;
                    m.put(attr::MASK4, &mask.to_be())?;
                }
                Matcher::Addr(Prefix::V6 { addr, len }) => {
                    m.put(attr::ADDR6, addr)?;
                    m.put(attr::PREFIX6, len)?;
                }
                Matcher::Weight(w) => m.put(attr::WEIGHT, w)?,
                Matcher::Content(p) => m.put_bytes(attr::PATTERN, p)?,
            }
            m.put(attr::OUT_PORT, &c.out)?;
            m.put_u64(attr::HITS, c.hits.get())
        });
        if r.is_err() {
            // Keep what fit; the rest goes in the next message of the dump.
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// The `dumpit` handler of `RULE_GET`: one message per rule (several for rules with more
/// conditions than fit in one), resumable through `cb->args[0..2]`.
///
/// # Safety
///
/// Called by the generic netlink core with a valid skb and callback.
unsafe extern "C" fn dump_rules(
    skb: *mut bindings::sk_buff,
    cb: *mut bindings::netlink_callback,
) -> c_int {
    // SAFETY: `cb` is valid for the call (function safety requirement).
    let (net, portid, seq, args, family, filter) = unsafe {
        let f = shim::oq_cb_attr(cb, i32::from(attr::PORT));
        (
            NetRef::new(shim::oq_cb_net(cb)),
            shim::oq_cb_portid(cb),
            shim::oq_cb_seq(cb),
            shim::oq_cb_args(cb),
            shim::oq_cb_family(cb),
            (!f.is_null()).then(|| u16::read(NonNull::new_unchecked(f.cast_mut()))),
        )
    };
    let Some(net) = net else {
        return EINVAL.to_errno();
    };
    // SAFETY: `args` points to the callback's six `long`s, ours between calls.
    let (mut rule_i, mut cond_i) = unsafe { (*args as usize, *args.add(1) as usize) };
    let nets = NETS.lock();
    let rules = qos_classifier::rules(&nets, net);
    if let Some(p) = filter {
        if !rules.iter().any(|r| r.port == p) {
            // SAFETY: `cb` is valid; the message is static.
            unsafe {
                let ext = shim::oq_cb_extack(cb);
                if !ext.is_null() {
                    (*ext)._msg = c_str!("no rule on this incoming port").as_char_ptr();
                }
            }
            return ENOENT.to_errno();
        }
    }
    while let Some(rule) = rules.get(rule_i) {
        if filter.is_some_and(|p| p != rule.port) {
            rule_i += 1;
            continue;
        }
        // SAFETY: `skb` and `family` are valid.
        let hdr = unsafe {
            bindings::genlmsg_put(
                skb,
                portid,
                seq,
                family,
                bindings::NLM_F_MULTI as i32,
                cmd::RULE_GET,
            )
        };
        if hdr.is_null() {
            break;
        }
        // INVARIANT: `hdr` was just put into `skb`.
        let m = Msg { skb, hdr };
        match put_rule(&m, rule, cond_i) {
            Ok(None) => {
                // SAFETY: `hdr` is the message being built in `skb`.
                unsafe { shim::oq_genlmsg_end(skb, m.hdr) };
                rule_i += 1;
                cond_i = 0;
            }
            Ok(Some(next)) if next > cond_i => {
                // SAFETY: as above.
                unsafe { shim::oq_genlmsg_end(skb, m.hdr) };
                cond_i = next;
                break;
            }
            _ => {
                // SAFETY: as above.
                unsafe { shim::oq_genlmsg_cancel(skb, m.hdr) };
                break;
            }
        }
    }
    // SAFETY: as above.
    unsafe {
        *args = rule_i as core::ffi::c_long;
        *args.add(1) = cond_i as core::ffi::c_long;
    }
    // SAFETY: `skb` is valid.
    let len = unsafe { shim::oq_skb_len(skb) };
    if len == 0 && rule_i < rules.len() {
        // Not even one rule header fits: cannot happen with the kernel's dump buffer size.
        return EMSGSIZE.to_errno();
    }
    len as c_int
}
