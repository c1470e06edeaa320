// SPDX-License-Identifier: GPL-2.0

//! The per-namespace store: every namespace's rules, meters and socket groups, and the
//! changes to them (rule, condition, meter and group commands, rule-set replace, flush,
//! namespace exit, module shutdown, the meters' rescan).
//!
//! Configuration is serialized per namespace (a [`NetState`]'s mutex); the forwarding hook
//! never takes it. Every change builds what it needs first and then publishes it in one
//! step (a rule's new [`Policy`], a rule set's [`Epoch`] switch), so a command either takes
//! effect whole or is refused with a [`Rejection`] and leaves nothing behind.
//!
//! Layering: below the crate root and netlink, above the classifier, the actuators and
//! the sensors, which it owns and joins together (a meter joins a group here, never the
//! other way round). Nothing below imports this file.

use crate::qos_ffi as shim;
use crate::{
    abi::{self, limits, rule_flags},
    chain::{self, ChainError},
    qos_actuators::Group,
    qos_classifier::{check_matcher, Cond, ContentOpts, Epoch, Matcher, Policy, Rule},
    qos_error::{reject, Rejection},
    qos_prio::{PrioPort, PrioTable, Settings},
    qos_sensor::{self, Counter, Feeder, Governor, Meter, Tracked},
    qos_sock::NetRef,
};
use kernel::{
    c_str,
    prelude::*,
    sync::{global_lock, Arc, Mutex},
};

/// The configuration of one network namespace: its rules, meters and groups.
pub(crate) struct NetRules {
    /// Rules in creation order.
    pub(crate) rules: KVec<Rule>,
    /// Meters, sorted by port.
    pub(crate) meters: KVec<Arc<Meter>>,
    /// Socket groups, sorted by number.
    pub(crate) groups: KVec<Arc<Group>>,
    /// Prioritized ports, in creation order, with their meters.
    pub(crate) prio_ports: KVec<(PrioPort, Arc<Meter>)>,
    /// The same, as the rules' hooks find them.
    prios: Arc<PrioTable>,
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
    let epoch = Arc::new(Epoch::new(), GFP_KERNEL_ACCOUNT)?;
    let prios = PrioTable::new()?;
    let st = Arc::pin_init(
        pin_init!(NetState {
            net,
            rules <- kernel::new_mutex!(NetRules {
                rules: KVec::new(),
                meters: KVec::new(),
                groups: KVec::new(),
                prio_ports: KVec::new(),
                prios,
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
#[expect(clippy::too_many_arguments)]
pub(crate) fn rule_new(
    nets: &mut Nets,
    net: NetRef,
    port: u16,
    kind: u8,
    default_port: u16,
    default_prio: Option<u8>,
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
    server_port_free(nets, net, port)?;
    let policy = Policy::new(kind, default_port, default_prio, KVec::new(), content)?;
    check_chains(
        &graph_with(existing, port, &policy)?,
        Some(abi::attr::DEFAULT_PORT),
    )
    .map_err(|(r, _)| r)?;
    let epoch = nets.epoch.clone();
    let rule = Rule::new(
        net,
        &epoch,
        &nets.prios,
        epoch.current(),
        port,
        kind,
        flags,
        policy,
    )?;
    rules_mut(nets, net)?.push(rule, GFP_KERNEL)?;
    Ok(())
}

/// Refuses a rule's incoming port that is a server's port by configuration: metered on
/// request, in a socket group or with a prioritized queue. Those refuse a rule's port in
/// turn (`METER_NEW`, `GROUP_PORT_ADD`, `PRIO_SET`), so the two can never meet, whatever
/// the order of the commands, and a saved configuration always restores.
fn server_port_free(nets: &Nets, net: NetRef, port: u16) -> Result<(), Rejection> {
    let meters = meters(nets, net);
    let Ok(i) = meter_slot(meters, port) else {
        return Ok(());
    };
    let m = &meters[i];
    let why = if m.flags() & abi::meter_flags::PRIO != 0 {
        c_str!("this port has a prioritized queue, for the server on it: delete the queue first")
    } else if m.grouped() {
        c_str!("this port is in a socket group, for the server on it: detach it first")
    } else if m.flags() & abi::meter_flags::REQUESTED != 0 {
        c_str!("this port is metered on request, for the server on it: delete the meter first")
    } else {
        return Ok(());
    };
    Err(reject(EBUSY, why, Some(abi::attr::PORT)))
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

fn new_cond(matcher: Matcher, out: u16, prio: Option<u8>) -> Result<Arc<Cond>, Rejection> {
    Ok(Arc::new(
        Cond {
            matcher,
            out,
            prio,
            hits: Counter::new(),
        },
        GFP_KERNEL_ACCOUNT,
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
    prio: Option<u8>,
) -> Result<(), Rejection> {
    let rule = rule_mut(nets, net, port)?;
    let kind = rule.kind;
    check_matcher(kind, &matcher)?;
    let old = rule.policy.clone();
    let slot = index.map(|i| cond_slot(&old, i)).transpose()?;
    // A replaced condition starts a new counter: it is a different condition.
    let cond = new_cond(matcher, out, prio)?;
    let mut conds = old.try_clone(1)?;
    match slot {
        Some(i) => conds[i] = cond,
        None => conds.push(cond, GFP_KERNEL_ACCOUNT)?,
    }
    let new = Policy::new(kind, old.default_port, old.default_prio, conds, old.content)?;
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
    let new = Policy::new(
        rule.kind,
        old.default_port,
        old.default_prio,
        conds,
        old.content,
    )?;
    rule.set_policy(new);
    Ok(())
}

/// Deletes the prioritized ports, groups, meters and rules of a namespace that is going
/// away.
fn flush(n: &mut NetRules) {
    shut_down_prio(n);
    shut_down_sensors(n, drop);
    drop(core::mem::take(&mut n.rules));
}

/// Shuts a namespace's groups and then its meters down and takes them out; the meters'
/// records go to `record`.
fn shut_down_sensors(n: &mut NetRules, mut record: impl FnMut(Arc<Tracked>)) {
    for g in core::mem::take(&mut n.groups) {
        g.shutdown();
    }
    for m in core::mem::take(&mut n.meters) {
        for rec in m.shutdown() {
            record(rec);
        }
    }
}

/// Closes every prioritized port of a namespace (their connections go to the servers
/// as far as they have room).
fn shut_down_prio(n: &mut NetRules) {
    for (p, m) in core::mem::take(&mut n.prio_ports) {
        prio_close(&n.prios, p, &m);
    }
}

/// Closes prioritized port `p`, whose meter is `m`.
fn prio_close(table: &PrioTable, p: PrioPort, m: &Meter) {
    m.set_feeder(None);
    m.clear_flags(abi::meter_flags::PRIO);
    p.shutdown(table);
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

/// What [`meter_auto`] did to a port's meter, for [`meter_auto_undo`].
#[derive(Clone, Copy)]
pub(crate) enum AutoMeter {
    /// Nothing: the port is metered for rules already, or the namespace has as many
    /// meters as it may.
    Kept,
    /// The port's meter (metered for another reason) was marked as a rule's target.
    Marked(u16),
    /// The port got a meter.
    Created(u16),
}

/// Meters `port`, which the rule on `rule_port` (new or not) is about to send
/// connections to ([`meter_auto`]), unless it is a rule's incoming port: those are never
/// metered.
pub(crate) fn meter_target(
    nets: &mut Nets,
    net: NetRef,
    port: u16,
    rule_port: u16,
) -> Result<AutoMeter, Rejection> {
    if port == rule_port || rules(nets, net).iter().any(|r| r.port == port) {
        return Ok(AutoMeter::Kept);
    }
    meter_auto(nets, net, port)
}

/// Meters `port`, which a rule is about to send connections to (not a rule's incoming
/// port: the caller knows), before the request that makes it a target changes anything,
/// so that a request that cannot have the meter (no memory) fails whole instead of
/// succeeding with the port unmetered. At the namespace's meter limit the port stays
/// unmetered, as documented: forwarding does not depend on it.
fn meter_auto(nets: &mut Nets, net: NetRef, port: u16) -> Result<AutoMeter, Rejection> {
    let have = meters(nets, net);
    match meter_slot(have, port) {
        Ok(i) if have[i].flags() & qos_sensor::AUTO != 0 => Ok(AutoMeter::Kept),
        Ok(i) => {
            have[i].add_flags(qos_sensor::AUTO);
            Ok(AutoMeter::Marked(port))
        }
        Err(_) if have.len() >= limits::MAX_METERS => Ok(AutoMeter::Kept),
        Err(_) => {
            meter_add(nets, net, port, qos_sensor::AUTO)?;
            Ok(AutoMeter::Created(port))
        }
    }
}

/// Takes back what [`meter_auto`] did, for a request that failed after it. Allocates
/// nothing.
pub(crate) fn meter_auto_undo(nets: &mut Nets, net: NetRef, what: AutoMeter) {
    let Some(n) = find_mut(nets, net) else {
        return;
    };
    match what {
        AutoMeter::Kept => {}
        AutoMeter::Marked(port) => {
            if let Ok(i) = meter_slot(&n.meters, port) {
                n.meters[i].clear_flags(qos_sensor::AUTO);
            }
        }
        AutoMeter::Created(port) => {
            if let Ok(Ok(m)) = meter_slot(&n.meters, port).map(|i| n.meters.remove(i)) {
                drop(m.shutdown());
            }
        }
    }
}

/// Meters the targets of a rule set's rules that are not its incoming ports
/// ([`meter_auto`]); on a failure, takes back what it did.
fn meter_auto_set(nets: &mut Nets, net: NetRef, staged: &[Staged]) -> Result<(), Rejection> {
    let mut incoming = KVec::with_capacity(staged.len(), GFP_KERNEL)?;
    let mut targets = KVec::<u16>::new();
    for s in staged {
        // Cannot fail: the capacity is the number of rules.
        let _ = incoming.push_within_capacity(s.port);
        for port in s.policy.targets() {
            targets.push(port, GFP_KERNEL)?;
        }
    }
    incoming.sort_unstable();
    targets.sort_unstable();
    let mut done = KVec::with_capacity(targets.len(), GFP_KERNEL)?;
    for (i, &port) in targets.iter().enumerate() {
        // Sorted: a port already handled is the one just before.
        if (i > 0 && targets[i - 1] == port) || incoming.binary_search(&port).is_ok() {
            continue;
        }
        match meter_auto(nets, net, port) {
            // Cannot fail: the capacity is the number of targets.
            Ok(a) => drop(done.push_within_capacity(a)),
            Err(e) => {
                for a in done.into_iter() {
                    meter_auto_undo(nets, net, a);
                }
                return Err(e);
            }
        }
    }
    Ok(())
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
    if n.meters[i].flags() & abi::meter_flags::PRIO != 0 {
        return Err(reject(
            EBUSY,
            c_str!(
                "this port has a prioritized queue, which needs its meter: delete the queue first"
            ),
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
        let mut n = st.lock();
        shut_down_prio(&mut n);
        // Without memory, a record goes now: its socket just is not kicked again if a
        // task re-enters a wrapper through a stale pointer.
        shut_down_sensors(&mut n, |rec| {
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
    g.shutdown();
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
    // Exact: the namespace's lock serializes every change of its groups' members.
    let (member, members) = g.membership(port);
    if member {
        return Err(reject(
            EEXIST,
            c_str!("this port is in the group already"),
            Some(abi::attr::PORT),
        ));
    }
    if members >= limits::MAX_GROUP_PORTS {
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
        m.leave(&*g);
        if existing.is_none() {
            let _ = meter_del(nets, net, port);
        }
    };
    if !m.join(g.clone(), ftp) {
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
    m.leave(&*g);
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
    /// Priority class at the default port.
    pub(crate) default_prio: Option<u8>,
    /// Conditions in priority order: matcher, outgoing port and priority class.
    pub(crate) conds: KVec<(Matcher, u16, Option<u8>)>,
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
        // The set is checked by itself: `tcpchains --restore-all --test` frees the
        // server's ports the set's rules take before it applies it.
        if !check_only {
            server_port_free(nets, net, spec.port)?;
        }
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
        let mut conds = KVec::with_capacity(spec.conds.len(), GFP_KERNEL_ACCOUNT)?;
        for (j, (matcher, out, prio)) in spec.conds.into_iter().enumerate() {
            let same = prev_policy
                .as_ref()
                .and_then(|p| p.conds.get(j))
                .filter(|c| c.out == out && c.prio == prio && c.matcher == matcher);
            let cond = match same {
                Some(c) => c.clone(),
                None => new_cond(matcher, out, prio)?,
            };
            conds.push(cond, GFP_KERNEL_ACCOUNT)?;
        }
        let policy = Policy::new(
            spec.kind,
            spec.default_port,
            spec.default_prio,
            conds,
            content,
        )?;
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
                &nets.prios,
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
    // The last step that can fail: the meters of the set's targets. After it,
    // `rules_mut` cannot fail (`meter_add` found the namespace alive, or nothing was
    // added).
    meter_auto_set(nets, net, &staged)?;
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
    if find(nets, net).is_none_or(|n| n.rules.is_empty()) {
        flush_rules(nets, net);
    }
    Ok(())
}

/// What `PRIO_SET` asks for.
pub(crate) struct PrioChange {
    /// Classes (creation only).
    pub(crate) classes: Option<u8>,
    /// Cap, depth, flags.
    pub(crate) cap: Option<u32>,
    /// Most released and not yet accepted.
    pub(crate) depth: Option<u32>,
    /// Bits of `prio_flags`.
    pub(crate) flags: Option<u32>,
    /// Classes whose deadline is set: `(class, deadline)` (`None`: no deadline).
    pub(crate) deadlines: KVec<(u8, Option<u32>)>,
}

/// Gives `port` a prioritized queue, or changes the settings of its queue (`PRIO_SET`).
pub(crate) fn prio_set(
    nets: &mut Nets,
    net: NetRef,
    port: u16,
    ch: PrioChange,
) -> Result<(), Rejection> {
    rules_mut(nets, net)?;
    if rules(nets, net).iter().any(|r| r.port == port) {
        return Err(reject(
            EINVAL,
            c_str!("a rule owns this port: a prioritized queue is for a server's port"),
            Some(abi::attr::PORT),
        ));
    }
    let existing = nets
        .prio_ports
        .iter()
        .position(|(p, _)| p.core.port == port);
    let classes = match existing {
        Some(i) => {
            let have = nets.prio_ports[i].0.core.classes;
            if ch.classes.is_some_and(|c| c != have) {
                return Err(reject(
                    EINVAL,
                    c_str!("the number of classes is fixed when the queue is created: delete it and create it again"),
                    Some(abi::attr::PRIO_CLASSES),
                ));
            }
            have
        }
        None => ch.classes.unwrap_or(limits::PRIO_CLASSES),
    };
    let mut s = match existing {
        Some(i) => nets.prio_ports[i].0.core.settings(),
        None => Settings::default(),
    };
    s.cap = ch.cap.unwrap_or(s.cap);
    s.depth = ch.depth.unwrap_or(s.depth);
    s.flags = ch.flags.unwrap_or(s.flags);
    for &(c, dl) in ch.deadlines.iter() {
        if c >= classes {
            return Err(reject(
                EINVAL,
                c_str!("no such class: classes count from 0 to the port's number of classes - 1"),
                Some(abi::attr::PRIO),
            ));
        }
        s.deadline_ms[usize::from(c)] = dl.unwrap_or(0);
    }
    if let Some(i) = existing {
        nets.prio_ports[i].0.core.set(s);
        return Ok(());
    }
    if nets.prio_ports.len() >= limits::MAX_PRIO_PORTS {
        return Err(reject(
            ENOSPC,
            c_str!("too many prioritized ports in this namespace (16)"),
            Some(abi::attr::PORT),
        ));
    }
    nets.prio_ports.reserve(1, GFP_KERNEL)?;
    let had_meter = meter_slot(&nets.meters, port).is_ok();
    meter_add(nets, net, port, abi::meter_flags::PRIO)?;
    let Ok(i) = meter_slot(&nets.meters, port) else {
        return Err(ENOMEM.into());
    };
    let meter = nets.meters[i].clone();
    let p = match PrioPort::new(net, &nets.prios, port, classes, s) {
        Ok(p) => p,
        Err(e) => {
            // Nothing half-created: the meter made for the queue goes again.
            meter.clear_flags(abi::meter_flags::PRIO);
            if !had_meter {
                if let Ok(m) = nets.meters.remove(i) {
                    drop(m.shutdown());
                }
            }
            return Err(e);
        }
    };
    let feeder: Arc<dyn Feeder> = p.core.clone();
    meter.set_feeder(Some(feeder));
    // Cannot fail: reserved above.
    let _ = nets.prio_ports.push_within_capacity((p, meter));
    Ok(())
}

/// Removes the prioritized queue of `port` (`PRIO_DEL`): its connections go to the
/// server as far as it has room, the rest are reset. The port stays metered.
pub(crate) fn prio_del(nets: &mut Nets, _net: NetRef, port: u16) -> Result<(), Rejection> {
    let i = nets
        .prio_ports
        .iter()
        .position(|(p, _)| p.core.port == port)
        .ok_or(reject(
            ENOENT,
            c_str!("this port has no prioritized queue"),
            Some(abi::attr::PORT),
        ))?;
    let (p, m) = nets
        .prio_ports
        .remove(i)
        .map_err(|_| Rejection::from(ENOENT))?;
    prio_close(&nets.prios, p, &m);
    Ok(())
}

/// The prioritized ports of `net`, in creation order.
pub(crate) fn prio_ports(nets: &Nets, _net: NetRef) -> &[(PrioPort, Arc<Meter>)] {
    &nets.prio_ports[..]
}
