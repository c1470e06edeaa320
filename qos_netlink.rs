// SPDX-License-Identifier: GPL-2.0

//! The `openqos` generic netlink family.
//!
//! The family, its operations and its attribute policy are built at load time from the
//! shared ABI (`rust/src/abi.rs`), so the kernel validates exactly what the tools encode.
//! Validation is strict (`resv_start_op` past the last command): unknown attributes,
//! wrong lengths and out-of-range values are refused by the netlink core with an extack
//! message and the offending attribute, before any handler runs. Handlers then check the
//! per-command required attributes and the semantics, again with an extack message.
//!
//! Layering: below only the crate root. Commands go to the per-namespace store
//! (`qos_store.rs`); dumps read the store's rules, meters and groups.

use crate::qos_ffi as shim;
use crate::{
    abi::{self, attr, cmd, hist, limits, replace_flags, stat, Kind},
    addr::Prefix,
    nla::{Attr, Attrs, Table},
    qos_actuators::Group,
    qos_classifier::{self, Matcher},
    qos_error::{reject, Rejection},
    qos_prio::PrioPort,
    qos_sensor::Meter,
    qos_sock::NetRef,
    qos_store::{self, RuleSpec},
};
use core::{ffi::c_int, ptr::NonNull};
use kernel::{bindings, c_str, prelude::*, ThisModule};

const NLA_HDRLEN: usize = crate::nla::HDRLEN;
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
        let table = s.policy.as_ptr();
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
                Kind::Nested => {
                    // Nested attributes come from the same table (`RULE` holds `COND`s),
                    // validated just as strictly, and must carry `NLA_F_NESTED`.
                    pol.len = attr::MAX;
                    pol.__bindgen_anon_1.nested_policy = table;
                    (bindings::NLA_NESTED, false)
                }
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
                op.flags = bindings::GENL_UNS_ADMIN_PERM as u8;
            }
            match c {
                cmd::RULE_GET => op.dumpit = Some(dump_rules),
                cmd::METER_GET => op.dumpit = Some(dump_meters),
                cmd::METER_NEW => op.doit = Some(doit::<{ cmd::METER_NEW }>),
                cmd::METER_DEL => op.doit = Some(doit::<{ cmd::METER_DEL }>),
                cmd::GROUP_GET => op.dumpit = Some(dump_groups),
                cmd::GROUP_NEW => op.doit = Some(doit::<{ cmd::GROUP_NEW }>),
                cmd::GROUP_DEL => op.doit = Some(doit::<{ cmd::GROUP_DEL }>),
                cmd::GROUP_SET => op.doit = Some(doit::<{ cmd::GROUP_SET }>),
                cmd::GROUP_PORT_ADD => op.doit = Some(doit::<{ cmd::GROUP_PORT_ADD }>),
                cmd::GROUP_PORT_DEL => op.doit = Some(doit::<{ cmd::GROUP_PORT_DEL }>),
                cmd::RULE_NEW => op.doit = Some(doit::<{ cmd::RULE_NEW }>),
                cmd::RULE_DEL => op.doit = Some(doit::<{ cmd::RULE_DEL }>),
                cmd::COND_NEW => op.doit = Some(doit::<{ cmd::COND_NEW }>),
                cmd::COND_DEL => op.doit = Some(doit::<{ cmd::COND_DEL }>),
                cmd::COND_SET => op.doit = Some(doit::<{ cmd::COND_SET }>),
                cmd::FLUSH => op.doit = Some(doit::<{ cmd::FLUSH }>),
                cmd::RULESET_REPLACE => op.doit = Some(doit::<{ cmd::RULESET_REPLACE }>),
                cmd::PRIO_SET => op.doit = Some(doit::<{ cmd::PRIO_SET }>),
                cmd::PRIO_DEL => op.doit = Some(doit::<{ cmd::PRIO_DEL }>),
                cmd::PRIO_GET => op.dumpit = Some(dump_prios),
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

/// The attributes of a request (or of one nested attribute), the last of each type.
/// The policy validated their types, lengths and ranges.
type Attrs1<'a> = Table<'a, N_ATTRS>;

/// A netlink request being handled by a `doit` handler.
///
/// # Invariants
///
/// `info` is the valid `genl_info` of the request, for the lifetime `'a`.
struct Request<'a> {
    info: NonNull<bindings::genl_info>,
    /// The request's attributes (the bytes after the generic netlink header).
    payload: &'a [u8],
    attrs: Attrs1<'a>,
}

impl<'a> Request<'a> {
    /// # Safety
    ///
    /// `info` is the valid `genl_info` of a request being handled, and stays valid for
    /// `'a`.
    unsafe fn new(info: NonNull<bindings::genl_info>) -> Self {
        let mut len = 0u32;
        // SAFETY: `info` is valid (function safety requirement); the message it describes
        // holds `len` bytes of attributes after its headers, alive for the request.
        let payload = unsafe {
            let p = shim::oq_genl_info_payload(info.as_ptr(), &mut len);
            core::slice::from_raw_parts(p.cast::<u8>(), len as usize)
        };
        // INVARIANT: guaranteed by the caller.
        Self {
            info,
            payload,
            attrs: Table::parse(payload),
        }
    }

    fn net(&self) -> Option<NetRef> {
        // SAFETY: `info` is valid; the requesting socket keeps the namespace alive for the
        // duration of the request.
        unsafe { NetRef::new(shim::oq_genl_info_net(self.info.as_ptr())) }
    }

    /// Reports `rej` through extack: its message, the offending attribute (`at`, or the
    /// attribute `rej` names at the top level), or a missing attribute type and the nest
    /// (`at`) it is missing from.
    fn fail(&self, rej: &Rejection, at: Option<Attr<'_>>, missing: Option<u16>) {
        let bad = at.or_else(|| rej.attr.and_then(|a| self.attrs.get(a)));
        // SAFETY: `info` is valid; `extack` is NULL or valid; messages are static strings;
        // `bad` lies in the request's message, which outlives the extack report.
        unsafe {
            let ext = self.info.as_ref().extack;
            if ext.is_null() {
                return;
            }
            (*ext)._msg = rej.msg.as_char_ptr();
            match (missing, bad) {
                // A missing attribute: `bad` is the nest it is missing from.
                (Some(m), nest) => {
                    (*ext).miss_type = m;
                    if let Some(n) = nest {
                        (*ext).miss_nest = n.whole.as_ptr().cast();
                    }
                }
                (None, Some(a)) => (*ext).bad_attr = a.whole.as_ptr().cast(),
                (None, None) => {}
            }
        }
    }
}

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
    // SAFETY: the netlink core passes a valid `info`, alive until the handler returns.
    let req = unsafe { Request::new(info) };
    match handle(CMD, &req) {
        Ok(()) => 0,
        Err(f) => {
            req.fail(&f.rej, f.at, f.missing);
            f.rej.err.to_errno()
        }
    }
}

/// Why a request failed, for extack.
struct Failure<'a> {
    rej: Rejection,
    /// The attribute to blame, when it is not the top-level one `rej` names.
    at: Option<Attr<'a>>,
    /// A required attribute that is missing.
    missing: Option<u16>,
}

impl From<Rejection> for Failure<'_> {
    fn from(rej: Rejection) -> Self {
        Self {
            rej,
            at: None,
            missing: None,
        }
    }
}

/// Checks that `t` holds the attributes `(required, optional)` and no other.
fn check_attrs<'a>(
    t: &Attrs1<'a>,
    (required, optional): (&[u16], &[u16]),
    nest: Option<Attr<'a>>,
) -> Result<(), Failure<'a>> {
    if let Some(a) = required.iter().find(|a| !t.has(**a)) {
        return Err(Failure {
            rej: reject(EINVAL, c_str!("missing required attribute"), None),
            at: nest,
            missing: Some(*a),
        });
    }
    if let Some(a) = t
        .types()
        .find(|a| !required.contains(a) && !optional.contains(a))
    {
        return Err(Failure {
            rej: reject(EINVAL, c_str!("attribute not valid here"), Some(a)),
            at: t.get(a),
            missing: None,
        });
    }
    Ok(())
}

/// The refusal of a command in a namespace whose state is gone (it is being dismantled).
fn no_state() -> Rejection {
    reject(
        ENODEV,
        c_str!("the network namespace is being dismantled"),
        None,
    )
}

fn handle<'a>(c: u8, req: &Request<'a>) -> Result<(), Failure<'a>> {
    let t = &req.attrs;
    check_attrs(t, abi::command_attrs(c), None)?;
    let net = req
        .net()
        .ok_or(reject(EINVAL, c_str!("no network namespace"), None))?;
    let port = t.u16(attr::PORT).unwrap_or(0);
    let gid = t.u32(attr::GROUP_ID).unwrap_or(0);
    if c == cmd::RULESET_REPLACE {
        return replace(req, net);
    }
    if c == cmd::GROUP_NEW
        && t.u8(attr::GROUP_TYPE) != Some(abi::group_type::RATIO)
        && !t.has(attr::RATE)
    {
        return Err(Failure {
            rej: reject(
                EINVAL,
                c_str!("accept-rate and output groups need a rate"),
                None,
            ),
            at: None,
            missing: Some(attr::RATE),
        });
    }
    let st = qos_store::state(net).ok_or_else(|| Failure::from(no_state()))?;
    let mut nets = st.lock();
    // The meter of the port a rule is to send to comes first: a request that cannot
    // have it (no memory) fails whole instead of leaving the port unmetered.
    let target = match c {
        cmd::RULE_NEW => t.u16(attr::DEFAULT_PORT),
        cmd::COND_NEW | cmd::COND_SET => t.u16(attr::OUT_PORT),
        _ => None,
    };
    let auto = match target {
        Some(p) => qos_store::meter_target(&mut nets, net, p, port)?,
        None => qos_store::AutoMeter::Kept,
    };
    let r = match c {
        cmd::RULE_NEW => qos_store::rule_new(
            &mut nets,
            net,
            port,
            t.u8(attr::RULE_TYPE).unwrap_or(0),
            t.u16(attr::DEFAULT_PORT).unwrap_or(0),
            t.u8(attr::DEFAULT_PRIO),
            t.u32(attr::RULE_FLAGS).unwrap_or(0),
            t.u32(attr::DATA_TIMEOUT_MS),
        ),
        cmd::RULE_DEL => qos_store::rule_del(&mut nets, net, port),
        cmd::COND_NEW | cmd::COND_SET => match parse_matcher(t) {
            Ok(m) => qos_store::cond_set(
                &mut nets,
                net,
                port,
                (c == cmd::COND_SET).then(|| t.u32(attr::COND_INDEX).unwrap_or(0)),
                m,
                t.u16(attr::OUT_PORT).unwrap_or(0),
                t.u8(attr::PRIO),
            ),
            Err(e) => Err(e),
        },
        cmd::COND_DEL => {
            qos_store::cond_del(&mut nets, net, port, t.u32(attr::COND_INDEX).unwrap_or(0))
        }
        cmd::FLUSH => {
            qos_store::flush_rules(&mut nets, net);
            Ok(())
        }
        cmd::METER_NEW => qos_store::meter_new(&mut nets, net, port),
        cmd::METER_DEL => qos_store::meter_del(&mut nets, net, port),
        cmd::GROUP_NEW => qos_store::group_new(
            &mut nets,
            net,
            gid,
            t.u8(attr::GROUP_TYPE).unwrap_or(0),
            t.u64(attr::RATE),
            t.u64(attr::BURST),
            t.u32(attr::GROUP_FLAGS).unwrap_or(0),
        ),
        cmd::GROUP_DEL => qos_store::group_del(&mut nets, net, gid),
        cmd::GROUP_SET => {
            let weight = match (t.u16(attr::PORT), t.u16(attr::WEIGHT)) {
                (Some(p), Some(w)) => Ok(Some((p, u32::from(w)))),
                (None, None) => Ok(None),
                (Some(_), None) => Err(reject(
                    EINVAL,
                    c_str!("a port's weight needs weight"),
                    Some(attr::PORT),
                )),
                (None, Some(_)) => Err(reject(
                    EINVAL,
                    c_str!("weight needs the port it is for"),
                    Some(attr::WEIGHT),
                )),
            };
            weight.and_then(|w| {
                let change = qos_store::GroupChange {
                    rate: t.u64(attr::RATE),
                    burst: t.u64(attr::BURST),
                    flags: t.u32(attr::GROUP_FLAGS),
                    weight: w,
                    lease_ms: t.u32(attr::LEASE_MS),
                };
                qos_store::group_set(&mut nets, net, gid, change)
            })
        }
        cmd::GROUP_PORT_ADD => qos_store::group_port_add(
            &mut nets,
            net,
            gid,
            port,
            t.u16(attr::WEIGHT).map(u32::from),
            t.u32(attr::GROUP_FLAGS).unwrap_or(0),
        ),
        cmd::GROUP_PORT_DEL => qos_store::group_port_del(&mut nets, net, gid, port),
        cmd::PRIO_SET => match parse_prio(req) {
            Ok(ch) => qos_store::prio_set(&mut nets, net, port, ch),
            Err(f) => return Err(f),
        },
        cmd::PRIO_DEL => qos_store::prio_del(&mut nets, net, port),
        _ => Err(reject(EOPNOTSUPP, c_str!("unknown command"), None)),
    };
    if r.is_err() {
        qos_store::meter_auto_undo(&mut nets, net, auto);
    }
    Ok(r?)
}

/// The first attribute of type `ty` in rule `nest`, else in one of its conditions.
fn find_in(nest: Attr<'_>, ty: u16) -> Option<Attr<'_>> {
    nest.nested().find(|b| b.ty == ty).or_else(|| {
        nest.nested()
            .filter(|b| b.ty == attr::COND)
            .find_map(|c| c.nested().find(|b| b.ty == ty))
    })
}

/// `RULESET_REPLACE`: parses every rule of the set, then replaces the namespace's rules.
fn replace<'a>(req: &Request<'a>, net: NetRef) -> Result<(), Failure<'a>> {
    let nests = || Attrs::new(req.payload).filter(|a| a.ty == attr::RULE);
    let n = nests().count();
    if n > limits::MAX_RULES {
        return Err(reject(ENOSPC, c_str!("too many rules in the set (256)"), None).into());
    }
    let mut set = KVec::with_capacity(n, GFP_KERNEL).map_err(Rejection::from)?;
    // The `RULE` of each rule of the set, to blame for what the store refuses.
    let mut heads = KVec::with_capacity(n, GFP_KERNEL).map_err(Rejection::from)?;
    let blame = |nest: Attr<'a>| {
        move |mut f: Failure<'a>| {
            f.at = f.at.or(Some(nest));
            f
        }
    };
    for a in Attrs::new(req.payload) {
        match a.ty {
            attr::RULE => {
                let spec = parse_rule(a).map_err(blame(a))?;
                set.push(spec, GFP_KERNEL).map_err(Rejection::from)?;
                heads.push(a, GFP_KERNEL).map_err(Rejection::from)?;
            }
            attr::RULE_MORE => {
                let Some(spec) = set.last_mut() else {
                    return Err(Failure {
                        rej: reject(
                            EINVAL,
                            c_str!("rule-more continues the rule before it, and there is none"),
                            None,
                        ),
                        at: Some(a),
                        missing: None,
                    });
                };
                parse_more(a, spec).map_err(blame(a))?;
            }
            _ => {}
        }
    }
    let check = req.attrs.u32(attr::REPLACE_FLAGS).unwrap_or(0) & replace_flags::CHECK != 0;
    let mut at = usize::MAX;
    let st = qos_store::state(net).ok_or_else(|| Failure::from(no_state()))?;
    let mut nets = st.lock();
    qos_store::replace(&mut nets, net, set, check, &mut at).map_err(|rej| {
        // Blame the attribute inside the rule at fault, else that rule.
        let at = heads
            .get(at)
            .map(|nest| rej.attr.and_then(|a| find_in(*nest, a)).unwrap_or(*nest));
        Failure {
            rej,
            at,
            missing: None,
        }
    })
}

/// One `RULE` of a `RULESET_REPLACE`.
fn parse_rule(nest: Attr<'_>) -> Result<RuleSpec, Failure<'_>> {
    let t: Attrs1<'_> = Table::parse(nest.payload());
    check_attrs(&t, abi::nest_attrs(attr::RULE), Some(nest))?;
    let mut spec = RuleSpec {
        port: t.u16(attr::PORT).unwrap_or(0),
        kind: t.u8(attr::RULE_TYPE).unwrap_or(0),
        default_port: t.u16(attr::DEFAULT_PORT).unwrap_or(0),
        default_prio: t.u8(attr::DEFAULT_PRIO),
        flags: t.u32(attr::RULE_FLAGS).unwrap_or(0),
        timeout_ms: t.u32(attr::DATA_TIMEOUT_MS),
        conds: KVec::new(),
    };
    parse_conds(nest, &mut spec)?;
    Ok(spec)
}

/// A `RULE_MORE`: more conditions for `spec`, the rule before it.
fn parse_more<'a>(nest: Attr<'a>, spec: &mut RuleSpec) -> Result<(), Failure<'a>> {
    let t: Attrs1<'_> = Table::parse(nest.payload());
    check_attrs(&t, abi::nest_attrs(attr::RULE_MORE), Some(nest))?;
    if t.u16(attr::PORT) != Some(spec.port) {
        return Err(Failure {
            rej: reject(
                EINVAL,
                c_str!("rule-more continues the rule before it: give that rule's port"),
                Some(attr::PORT),
            ),
            at: t.get(attr::PORT).or(Some(nest)),
            missing: None,
        });
    }
    parse_conds(nest, spec)
}

/// Appends the `COND`s of `nest` to `spec`'s conditions, within the cap of its type.
fn parse_conds<'a>(nest: Attr<'a>, spec: &mut RuleSpec) -> Result<(), Failure<'a>> {
    let conds = || nest.nested().filter(|a| a.ty == attr::COND);
    let n = conds().count();
    if spec.conds.len() + n > limits::max_conds(spec.kind) {
        return Err(Failure::from(qos_classifier::too_many_conds()));
    }
    spec.conds.reserve(n, GFP_KERNEL).map_err(Rejection::from)?;
    for c in conds() {
        let ct: Attrs1<'_> = Table::parse(c.payload());
        check_attrs(&ct, abi::nest_attrs(attr::COND), Some(c))?;
        let m = parse_matcher(&ct).map_err(|rej| Failure {
            at: rej.attr.and_then(|a| ct.get(a)).or(Some(c)),
            rej,
            missing: None,
        })?;
        let out = ct.u16(attr::OUT_PORT).unwrap_or(0);
        spec.conds
            .push((m, out, ct.u8(attr::PRIO)), GFP_KERNEL)
            .map_err(Rejection::from)?;
    }
    Ok(())
}

/// The settings of a `PRIO_SET`.
fn parse_prio<'a>(req: &Request<'a>) -> Result<qos_store::PrioChange, Failure<'a>> {
    let t = &req.attrs;
    let nests = || Attrs::new(req.payload).filter(|a| a.ty == attr::PRIO_CLASS);
    let n = nests().count();
    if n > usize::from(limits::MAX_PRIO_CLASSES) {
        return Err(reject(EINVAL, c_str!("more class settings than classes"), None).into());
    }
    let mut deadlines = KVec::with_capacity(n, GFP_KERNEL).map_err(Rejection::from)?;
    for c in nests() {
        let ct: Attrs1<'_> = Table::parse(c.payload());
        check_attrs(&ct, abi::nest_attrs(attr::PRIO_CLASS), Some(c))?;
        let class = ct.u8(attr::PRIO).unwrap_or(0);
        let dl = ct.u32(attr::DEADLINE_MS);
        if dl == Some(0) {
            return Err(Failure {
                rej: reject(
                    EINVAL,
                    c_str!("a deadline is at least 1 ms; leave deadline-ms out for none"),
                    Some(attr::DEADLINE_MS),
                ),
                at: ct.get(attr::DEADLINE_MS),
                missing: None,
            });
        }
        deadlines
            .push((class, dl), GFP_KERNEL)
            .map_err(Rejection::from)?;
    }
    Ok(qos_store::PrioChange {
        classes: t.u8(attr::PRIO_CLASSES),
        cap: t.u32(attr::PRIO_CAP),
        depth: t.u32(attr::PRIO_DEPTH),
        flags: t.u32(attr::PRIO_FLAGS),
        deadlines,
    })
}

/// The matcher of a condition: exactly one of an IPv4 prefix, an IPv6 prefix, a weight,
/// a string.
fn parse_matcher(req: &Attrs1<'_>) -> Result<Matcher, Rejection> {
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
    if let Some(w) = req.u16(attr::WEIGHT) {
        return Ok(Matcher::Weight(w));
    }
    if let Some(p) = req.get(attr::PATTERN).map(|a| a.payload()) {
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

fn parse_prefix(req: &Attrs1<'_>) -> Result<Prefix, Rejection> {
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
        (true, false) => match (req.u32(attr::ADDR4), req.u32(attr::MASK4)) {
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
        (false, true) => match (
            req.get(attr::ADDR6).and_then(|a| a.bytes16()),
            req.u8(attr::PREFIX6),
        ) {
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
    let policy = &rule.policy;
    m.put(attr::PORT, &rule.port)?;
    m.put(attr::RULE_TYPE, &rule.kind)?;
    m.put(attr::DEFAULT_PORT, &policy.default_port)?;
    if let Some(p) = policy.default_prio {
        m.put(attr::DEFAULT_PRIO, &p)?;
    }
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
            if policy.content.is_some() {
                m.put_u64(stat::TIMED_OUT, s.timed_out.get())?;
                m.put_u64(stat::PENDING_FULL, s.pending_full.get())?;
                m.put_u64(stat::SCANNED, s.scanned.get())?;
                m.put_u64(stat::LOOKS, s.looks.get())?;
            }
            Ok(())
        })?;
        if let Some(c) = policy.content {
            m.put(attr::DATA_TIMEOUT_MS, &c.timeout_ms)?;
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
            if let Some(p) = c.prio {
                m.put(attr::PRIO, &p)?;
            }
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
    let Some(d) = (unsafe { Dump::new(cb) }) else {
        return EINVAL.to_errno();
    };
    let (net, args, filter) = (d.net, d.args, d.filter);
    // SAFETY: `args` points to the callback's six `long`s, ours between calls.
    let (mut rule_i, mut cond_i) = unsafe { (*args as usize, *args.add(1) as usize) };
    let Some(st) = qos_store::state(net) else {
        return d.fail(ENODEV, c_str!("the network namespace is being dismantled"));
    };
    let nets = st.lock();
    let rules = qos_store::rules(&nets, net);
    if let Some(p) = filter {
        if !rules.iter().any(|r| r.port == p) {
            return d.fail(ENOENT, c_str!("no rule on this incoming port"));
        }
    }
    while let Some(rule) = rules.get(rule_i) {
        if filter.is_some_and(|p| p != rule.port) {
            rule_i += 1;
            continue;
        }
        let Some(m) = d.msg(skb, cmd::RULE_GET) else {
            break;
        };
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

/// The parts of a dump's callback the handlers use.
struct Dump {
    cb: *mut bindings::netlink_callback,
    net: NetRef,
    portid: u32,
    seq: u32,
    args: *mut core::ffi::c_long,
    family: *const bindings::genl_family,
    /// The request's `PORT`, if any.
    filter: Option<u16>,
}

impl Dump {
    /// # Safety
    ///
    /// `cb` must be a valid dump callback, for as long as the result is used.
    unsafe fn new(cb: *mut bindings::netlink_callback) -> Option<Self> {
        // SAFETY: `cb` is valid (caller).
        unsafe {
            let f = shim::oq_cb_attr(cb, i32::from(attr::PORT));
            Some(Self {
                cb,
                net: NetRef::new(shim::oq_cb_net(cb))?,
                portid: shim::oq_cb_portid(cb),
                seq: shim::oq_cb_seq(cb),
                args: shim::oq_cb_args(cb),
                family: shim::oq_cb_family(cb),
                // The policy validated `PORT` as a u16.
                filter: (!f.is_null()).then(|| {
                    f.cast::<u8>()
                        .add(NLA_HDRLEN)
                        .cast::<u16>()
                        .read_unaligned()
                }),
            })
        }
    }

    /// Fails the dump with `err` and the extack message `msg`.
    fn fail(&self, err: Error, msg: &'static CStr) -> c_int {
        // SAFETY: `cb` is valid (`new`); the message is static.
        unsafe {
            let ext = shim::oq_cb_extack(self.cb);
            if !ext.is_null() {
                (*ext)._msg = msg.as_char_ptr();
            }
        }
        err.to_errno()
    }

    /// Starts a message of command `c` in `skb`.
    fn msg(&self, skb: *mut bindings::sk_buff, c: u8) -> Option<Msg> {
        // SAFETY: `skb` and `family` are valid.
        let hdr = unsafe {
            bindings::genlmsg_put(
                skb,
                self.portid,
                self.seq,
                self.family,
                bindings::NLM_F_MULTI as i32,
                c,
            )
        };
        // INVARIANT: `hdr` was just put into `skb`.
        (!hdr.is_null()).then_some(Msg { skb, hdr })
    }
}

/// A histogram as the native-endian u64 bytes of `DELAY_HIST`.
fn hist_bytes(h: &[u64; hist::BUCKETS]) -> [u8; hist::BUCKETS * 8] {
    let mut bytes = [0u8; hist::BUCKETS * 8];
    // Byte by byte: a zip over `chunks_exact_mut` leaves objtool an unreachable panic
    // path it reports as falling through.
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = h.get(i / 8).map_or(0, |c| c.to_ne_bytes()[i % 8]);
    }
    bytes
}

/// Writes one prioritized port message.
fn put_prio(m: &Msg, p: &PrioPort) -> Result {
    let core = &p.core;
    let s = core.settings();
    m.put(attr::PORT, &core.port)?;
    m.put(attr::PRIO_CLASSES, &core.classes)?;
    m.put(attr::PRIO_CAP, &s.cap)?;
    m.put(attr::PRIO_DEPTH, &s.depth)?;
    m.put(attr::PRIO_FLAGS, &s.flags)?;
    for c in 0..usize::from(core.classes) {
        let r = core.read(c);
        m.nest(attr::PRIO_CLASS, |m| {
            m.put(attr::PRIO, &(c as u8))?;
            if r.deadline_ms > 0 {
                m.put(attr::DEADLINE_MS, &r.deadline_ms)?;
            }
            m.nest(attr::PRIO_STATS, |m| {
                for (ty, v) in r.stats {
                    m.put_u64(ty, v)?;
                }
                Ok(())
            })?;
            m.put_bytes(attr::DELAY_HIST, &hist_bytes(&r.hist))
        })?;
    }
    Ok(())
}

/// The `dumpit` handler of `PRIO_GET`: one message per prioritized port, resumable
/// through `cb->args[0]`.
///
/// # Safety
///
/// Called by the generic netlink core with a valid skb and callback.
unsafe extern "C" fn dump_prios(
    skb: *mut bindings::sk_buff,
    cb: *mut bindings::netlink_callback,
) -> c_int {
    // SAFETY: `cb` is valid for the call (function safety requirement).
    let Some(d) = (unsafe { Dump::new(cb) }) else {
        return EINVAL.to_errno();
    };
    let Some(st) = qos_store::state(d.net) else {
        return d.fail(ENODEV, c_str!("the network namespace is being dismantled"));
    };
    let nets = st.lock();
    d.each(
        skb,
        cmd::PRIO_GET,
        qos_store::prio_ports(&nets, d.net),
        |(p, _)| p.core.port,
        d.filter
            .map(|p| (p, c_str!("this port has no prioritized queue"))),
        |m, (p, _)| put_prio(m, p),
    )
}

/// Writes one meter message.
fn put_meter(m: &Msg, meter: &Meter) -> Result {
    let r = meter.read();
    m.put(attr::PORT, &meter.port)?;
    m.put(attr::METER_FLAGS, &r.flags)?;
    m.nest(attr::METER_STATS, |m| {
        for (ty, v) in r.stats {
            m.put_u64(ty, v)?;
        }
        Ok(())
    })?;
    m.put_bytes(attr::DELAY_HIST, &hist_bytes(&r.hist))
}

impl Dump {
    /// Dumps `items`, one message of command `c` each, resumable through `cb->args[0]`:
    /// all, or with a `filter` those whose `key` it gives (and `ENOENT` with the filter's
    /// message when none has it).
    fn each<T, K: PartialEq>(
        &self,
        skb: *mut bindings::sk_buff,
        c: u8,
        items: &[T],
        key: impl Fn(&T) -> K,
        filter: Option<(K, &'static CStr)>,
        put: impl Fn(&Msg, &T) -> Result,
    ) -> c_int {
        let filter = match filter {
            Some((f, missing)) if !items.iter().any(|x| key(x) == f) => {
                return self.fail(ENOENT, missing);
            }
            f => f.map(|(f, _)| f),
        };
        // SAFETY: `args` points to the callback's six `long`s, ours between calls.
        let mut i = unsafe { *self.args as usize };
        while let Some(x) = items.get(i) {
            if filter.as_ref().is_some_and(|f| key(x) != *f) {
                i += 1;
                continue;
            }
            let Some(m) = self.msg(skb, c) else {
                break;
            };
            if put(&m, x).is_err() {
                // SAFETY: `hdr` is the message being built in `skb`.
                unsafe { shim::oq_genlmsg_cancel(skb, m.hdr) };
                break;
            }
            // SAFETY: as above.
            unsafe { shim::oq_genlmsg_end(skb, m.hdr) };
            i += 1;
        }
        // SAFETY: as above.
        unsafe { *self.args = i as core::ffi::c_long };
        // SAFETY: `skb` is valid.
        let len = unsafe { shim::oq_skb_len(skb) };
        if len == 0 && i < items.len() {
            return EMSGSIZE.to_errno();
        }
        len as c_int
    }
}

/// The `dumpit` handler of `METER_GET`: one message per meter, resumable through
/// `cb->args[0]`.
///
/// # Safety
///
/// Called by the generic netlink core with a valid skb and callback.
unsafe extern "C" fn dump_meters(
    skb: *mut bindings::sk_buff,
    cb: *mut bindings::netlink_callback,
) -> c_int {
    // SAFETY: `cb` is valid for the call (function safety requirement).
    let Some(d) = (unsafe { Dump::new(cb) }) else {
        return EINVAL.to_errno();
    };
    let Some(st) = qos_store::state(d.net) else {
        return d.fail(ENODEV, c_str!("the network namespace is being dismantled"));
    };
    let nets = st.lock();
    d.each(
        skb,
        cmd::METER_GET,
        qos_store::meters(&nets, d.net),
        |m| m.port,
        d.filter.map(|p| (p, c_str!("this port is not metered"))),
        |m, meter| put_meter(m, meter),
    )
}

/// Writes one group message.
fn put_group(m: &Msg, g: &Group) -> Result {
    let r = g.read();
    m.put(attr::GROUP_ID, &g.id)?;
    m.put(attr::GROUP_TYPE, &g.kind)?;
    if r.rate > 0 {
        m.put_u64(attr::RATE, r.rate)?;
        m.put_u64(attr::BURST, r.burst)?;
    }
    m.put(attr::GROUP_FLAGS, &r.flags)?;
    if let Some((left, fallback)) = r.lease {
        m.put(attr::LEASE_MS, &left)?;
        m.put_u64(attr::FALLBACK_RATE, fallback)?;
    }
    for &(port, weight, hits, flags) in r.members.iter() {
        m.nest(attr::MEMBER, |m| {
            m.put(attr::PORT, &port)?;
            // Weights are at most WEIGHT_TOTAL, within u16.
            m.put(attr::WEIGHT, &(weight as u16))?;
            m.put_u64(attr::HITS, hits)?;
            m.put(attr::GROUP_FLAGS, &flags)
        })?;
    }
    m.nest(attr::GROUP_STATS, |m| {
        for (ty, v) in r.stats {
            m.put_u64(ty, v)?;
        }
        Ok(())
    })
}

/// The `dumpit` handler of `GROUP_GET`: one message per group, resumable through
/// `cb->args[0]`.
///
/// # Safety
///
/// Called by the generic netlink core with a valid skb and callback.
unsafe extern "C" fn dump_groups(
    skb: *mut bindings::sk_buff,
    cb: *mut bindings::netlink_callback,
) -> c_int {
    // SAFETY: `cb` is valid for the call (function safety requirement).
    let Some(d) = (unsafe { Dump::new(cb) }) else {
        return EINVAL.to_errno();
    };
    // SAFETY: `cb` is valid; the policy validated `GROUP_ID` as a u32.
    let filter = unsafe {
        let f = shim::oq_cb_attr(cb, i32::from(attr::GROUP_ID));
        (!f.is_null()).then(|| {
            f.cast::<u8>()
                .add(NLA_HDRLEN)
                .cast::<u32>()
                .read_unaligned()
        })
    };
    let Some(st) = qos_store::state(d.net) else {
        return d.fail(ENODEV, c_str!("the network namespace is being dismantled"));
    };
    let nets = st.lock();
    d.each(
        skb,
        cmd::GROUP_GET,
        qos_store::groups(&nets, d.net),
        |g| g.id,
        filter.map(|id| (id, c_str!("no such socket group"))),
        |m, g| put_group(m, g),
    )
}
