// SPDX-License-Identifier: GPL-2.0

//! The classifier: rules, their conditions, and the forwarding decision.
//!
//! A rule owns an incoming port. The module listens there itself ([`ModuleListener`]) and
//! for every established connection picks an outgoing port: the first condition, in the
//! order added, that the connection satisfies, else the rule's default port. The
//! connection is then moved into the accept queue of whoever listens on that port.
//!
//! Configuration is serialized by one mutex ([`NETS`]); the hook never takes it. It reads
//! the rule's current [`Policy`], an immutable snapshot replaced as a whole on every
//! change (so a connection sees either the old or the new condition list, never a mix).

use crate::{
    abi::{self, limits, rule_flags, rule_type},
    addr::{Client, Prefix},
    chain::{self, ChainError},
    qos_sensor::{Counter, RuleStats},
    qos_sock::{Drained, Family, Forwarder, ModuleListener, MoveError, NetRef},
};
use kernel::{
    bindings, c_str,
    prelude::*,
    str::CStr,
    sync::{global_lock, new_spinlock_irq, rcu, Arc, SpinLockIrq},
};

/// A refused configuration change: errno, message for extack, offending attribute.
pub(crate) struct Rejection {
    /// The errno returned to the caller.
    pub(crate) err: Error,
    /// The extack message.
    pub(crate) msg: &'static CStr,
    /// The attribute to point at, if one is to blame.
    pub(crate) attr: Option<u16>,
}

/// Shorthand for a [`Rejection`].
pub(crate) const fn reject(err: Error, msg: &'static CStr, attr: Option<u16>) -> Rejection {
    Rejection { err, msg, attr }
}

impl From<kernel::alloc::AllocError> for Rejection {
    fn from(_: kernel::alloc::AllocError) -> Self {
        ENOMEM.into()
    }
}

impl From<Error> for Rejection {
    fn from(err: Error) -> Self {
        reject(err, c_str!("openqos: out of memory or kernel error"), None)
    }
}

/// What a condition tests.
#[derive(Clone, Copy)]
pub(crate) enum Matcher {
    /// Address rules: the client's source address is in this prefix.
    Addr(Prefix),
    /// Probabilistic rules: taken with probability `weight / 10000`.
    Weight(u16),
}

/// One condition: a matcher and the port it sends to. Conditions are shared by the
/// policy snapshots that contain them, so their counters survive edits of the rule.
pub(crate) struct Cond {
    /// What it tests.
    pub(crate) matcher: Matcher,
    /// Outgoing port.
    pub(crate) out: u16,
    /// Connections that matched.
    pub(crate) hits: Counter,
}

/// An immutable snapshot of a rule's forwarding decision.
pub(crate) struct Policy {
    /// Port used when no condition matches.
    pub(crate) default_port: u16,
    /// Conditions, tried in order.
    pub(crate) conds: KVec<Arc<Cond>>,
}

impl Policy {
    /// The condition that chooses the outgoing port for `client` (`None`: the default
    /// port).
    fn classify(&self, client: &Client) -> Option<&Cond> {
        let mut draw = None;
        self.conds.iter().map(|c| &**c).find(|c| match c.matcher {
            Matcher::Addr(p) => p.matches(client),
            Matcher::Weight(w) => {
                // One uniform draw in [0, 10000) per connection, compared against the
                // running sum of weights: condition i wins with probability w_i / 10000.
                let d = draw.get_or_insert_with(|| {
                    // SAFETY: plain function call; the bound is non-zero.
                    unsafe { bindings::__get_random_u32_below(limits::WEIGHT_TOTAL as u32) }
                });
                if *d < u32::from(w) {
                    true
                } else {
                    *d -= u32::from(w);
                    false
                }
            }
        })
    }

    /// Every port this policy may forward to.
    fn targets(&self) -> impl Iterator<Item = u16> + '_ {
        Iterator::chain(
            core::iter::once(self.default_port),
            self.conds.iter().map(|c| c.out),
        )
    }

    /// Sum of the weights of the conditions, `skip` excepted.
    fn weights(&self, skip: Option<usize>) -> u64 {
        self.conds
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != skip)
            .map(|(_, c)| match c.matcher {
                Matcher::Weight(w) => u64::from(w),
                Matcher::Addr(_) => 0,
            })
            .sum()
    }

    /// A copy of the condition list with room for `extra` more.
    fn try_clone(&self, extra: usize) -> Result<KVec<Arc<Cond>>> {
        let mut conds = KVec::with_capacity(self.conds.len() + extra, GFP_KERNEL)?;
        for c in self.conds.iter() {
            conds.push(c.clone(), GFP_KERNEL)?;
        }
        Ok(conds)
    }
}

/// State of a rule shared between configuration and its listeners' hooks.
#[pin_data]
pub(crate) struct RuleShared {
    #[pin]
    policy: SpinLockIrq<Arc<Policy>>,
    /// Outcome counters.
    pub(crate) stats: RuleStats,
}

impl RuleShared {
    /// The current policy. The lock is held only to take a reference.
    pub(crate) fn policy(&self) -> Arc<Policy> {
        self.policy.lock().clone()
    }

    fn set_policy(&self, new: Arc<Policy>) {
        let old = core::mem::replace(&mut *self.policy.lock(), new);
        // The old snapshot is freed here, outside the lock, or by the last hook using it.
        drop(old);
    }
}

/// The [`Forwarder`] of a rule's listeners.
pub(crate) struct Forward {
    shared: Arc<RuleShared>,
}

impl Forwarder for Forward {
    fn drain(&self, l: &ModuleListener<Self>, process: bool) -> Drained {
        // One snapshot for the whole batch: a change made meanwhile applies from the next
        // batch on, and every connection still sees one complete condition list.
        let policy = self.shared.policy();
        for _ in 0..limits::HOOK_BUDGET {
            let Some((head, peer)) = l.queue_head() else {
                return Drained::Empty;
            };
            let cond = policy.classify(&peer.client());
            let port = cond.map_or(policy.default_port, |c| c.out);
            let moved = {
                let rcu = rcu::read_lock();
                match l.sock().lookup(&rcu, &peer, port) {
                    Some(target) => l.sock().move_head(&head, target),
                    None => Err(MoveError::NoListener),
                }
            };
            let stats = &self.shared.stats;
            match moved {
                Ok(()) => stats.forwarded.inc(),
                Err(MoveError::Race) => continue,
                // Refusing needs `accept()`, which needs process context.
                Err(_) if !process => return Drained::Defer,
                Err(why) => {
                    if l.sock().refuse_head().is_err() {
                        return Drained::Defer;
                    }
                    stats.refused(why);
                }
            }
            match cond {
                Some(c) => c.hits.inc(),
                None => stats.default_hits.inc(),
            }
        }
        Drained::Defer
    }
}

/// A configured rule.
pub(crate) struct Rule {
    /// Incoming port.
    pub(crate) port: u16,
    /// One of [`rule_type`].
    pub(crate) kind: u8,
    /// Bits of [`rule_flags`].
    pub(crate) flags: u32,
    /// Policy and counters.
    pub(crate) shared: Arc<RuleShared>,
    listeners: KVec<Pin<KBox<ModuleListener<Forward>>>>,
}

impl Rule {
    /// Connections waiting in the module's own queues for this rule.
    pub(crate) fn waiting(&self) -> u64 {
        self.listeners
            .iter()
            .map(|l| u64::from(l.sock().waiting()))
            .sum()
    }
}

/// The rules of one network namespace.
pub(crate) struct NetRules {
    key: usize,
    /// Rules in creation order.
    pub(crate) rules: KVec<Rule>,
}

global_lock! {
    // SAFETY: initialized in the module's `init` before anything else uses it.
    pub(crate) unsafe(uninit) static NETS: Mutex<KVec<NetRules>> = KVec::new();
}

/// The configuration of every namespace, locked.
pub(crate) type Nets = kernel::sync::GlobalGuard<NETS>;

fn find(nets: &Nets, net: NetRef) -> Option<&NetRules> {
    nets.iter().find(|n| n.key == net.key())
}

fn find_mut(nets: &mut Nets, net: NetRef) -> Option<&mut NetRules> {
    nets.iter_mut().find(|n| n.key == net.key())
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

/// Checks that the namespace's rules, with `port`'s targets replaced by `candidate`,
/// form no cycle and no chain deeper than the limit.
fn check_chains(rules: &[Rule], port: u16, candidate: &Policy, attr: u16) -> Result<(), Rejection> {
    let mut policies = KVec::with_capacity(rules.len(), GFP_KERNEL)?;
    let mut ports = KVec::with_capacity(rules.len() + 1, GFP_KERNEL)?;
    for r in rules.iter().filter(|r| r.port != port) {
        policies.push((r.port, r.shared.policy()), GFP_KERNEL)?;
        ports.push(r.port, GFP_KERNEL)?;
    }
    ports.push(port, GFP_KERNEL)?;
    let targets = |p: u16| {
        if p == port {
            Some(candidate.targets())
        } else {
            policies
                .iter()
                .find(|(q, _)| *q == p)
                .map(|(_, pol)| pol.targets())
        }
    };
    let mut memo = KVec::from_elem(0u8, ports.len(), GFP_KERNEL)?;
    chain::check(&ports, &targets, &mut memo, limits::MAX_CHAIN_DEPTH).map_err(|e| match e {
        ChainError::Cycle(_) => reject(
            ELOOP,
            c_str!("outgoing port leads back to this rule's incoming port"),
            Some(attr),
        ),
        ChainError::TooDeep(_) | ChainError::TooMany => reject(
            ELOOP,
            c_str!("chain of rules would be longer than the limit (8)"),
            Some(attr),
        ),
    })
}

/// Creates a rule listening on `port` in `net`.
pub(crate) fn rule_new(
    nets: &mut Nets,
    net: NetRef,
    port: u16,
    kind: u8,
    default_port: u16,
    flags: u32,
) -> Result<(), Rejection> {
    if kind == rule_type::CONTENT {
        return Err(reject(
            EOPNOTSUPP,
            c_str!("content rules (type c) are not implemented in this version"),
            Some(abi::attr::RULE_TYPE),
        ));
    }
    if flags & rule_flags::NOCASE != 0 {
        return Err(reject(
            EINVAL,
            c_str!("case-insensitive matching is for content rules"),
            Some(abi::attr::RULE_FLAGS),
        ));
    }
    let existing = rules(nets, net);
    if existing.iter().any(|r| r.port == port) {
        return Err(reject(
            EEXIST,
            c_str!("a rule already owns this incoming port"),
            Some(abi::attr::PORT),
        ));
    }
    if existing.len() >= limits::MAX_RULES {
        return Err(reject(
            ENOSPC,
            c_str!("too many rules in this namespace (256)"),
            None,
        ));
    }
    let policy = Arc::new(
        Policy {
            default_port,
            conds: KVec::new(),
        },
        GFP_KERNEL,
    )?;
    check_chains(existing, port, &policy, abi::attr::DEFAULT_PORT)?;

    let shared = Arc::pin_init(
        pin_init!(RuleShared {
            policy <- new_spinlock_irq!(policy, "openqos_rule_policy"),
            stats: RuleStats::new(),
        }),
        GFP_KERNEL,
    )?;
    let families: &[Family] = if flags & rule_flags::DUAL_STACK != 0 {
        &[Family::Inet6Dual]
    } else {
        &[Family::Inet, Family::Inet6Only]
    };
    let mut listeners = KVec::with_capacity(families.len(), GFP_KERNEL)?;
    for f in families {
        let fwd = Forward {
            shared: shared.clone(),
        };
        // On failure, the listeners created so far are dropped (closed) here: nothing is
        // left half-created.
        let l = ModuleListener::new(net, *f, port, fwd).map_err(|e| {
            if e == EADDRINUSE {
                reject(
                    e,
                    c_str!("another socket already listens on the incoming port"),
                    Some(abi::attr::PORT),
                )
            } else {
                reject(
                    e,
                    c_str!("could not listen on the incoming port"),
                    Some(abi::attr::PORT),
                )
            }
        })?;
        listeners.push(l, GFP_KERNEL)?;
    }
    let rule = Rule {
        port,
        kind,
        flags,
        shared,
        listeners,
    };
    if let Some(n) = find_mut(nets, net) {
        n.rules.push(rule, GFP_KERNEL)?;
    } else {
        let mut rules = KVec::new();
        rules.push(rule, GFP_KERNEL)?;
        nets.push(
            NetRules {
                key: net.key(),
                rules,
            },
            GFP_KERNEL,
        )?;
    }
    Ok(())
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

/// Checks that `matcher` fits the rule type `kind`.
fn check_matcher(kind: u8, matcher: &Matcher) -> Result<(), Rejection> {
    match (kind, matcher) {
        (rule_type::ADDRESS, Matcher::Addr(_)) | (rule_type::PROBABILISTIC, Matcher::Weight(_)) => {
            Ok(())
        }
        (rule_type::ADDRESS, _) => Err(reject(
            EINVAL,
            c_str!("an address rule takes addr4+mask4 or addr6+prefix6 conditions"),
            None,
        )),
        _ => Err(reject(
            EINVAL,
            c_str!("a probabilistic rule takes weight conditions"),
            Some(abi::attr::WEIGHT),
        )),
    }
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
) -> Result<(), Rejection> {
    let rule = rule_mut(nets, net, port)?;
    check_matcher(rule.kind, &matcher)?;
    let old = rule.shared.policy();
    let slot = match index {
        None if old.conds.len() >= limits::MAX_CONDS => {
            return Err(reject(
                ENOSPC,
                c_str!("too many conditions in this rule (1024)"),
                None,
            ))
        }
        None => None,
        Some(i) => Some(cond_slot(&old, i)?),
    };
    if let Matcher::Weight(w) = matcher {
        if old.weights(slot) + u64::from(w) > limits::WEIGHT_TOTAL {
            return Err(reject(
                EINVAL,
                c_str!("the weights of a rule add up to more than 10000"),
                Some(abi::attr::WEIGHT),
            ));
        }
    }
    let cond = Arc::new(
        Cond {
            matcher,
            out,
            hits: Counter::new(),
        },
        GFP_KERNEL,
    )?;
    let mut conds = old.try_clone(1)?;
    match slot {
        // A replaced condition starts a new counter: it is a different condition.
        Some(i) => conds[i] = cond,
        None => conds.push(cond, GFP_KERNEL)?,
    }
    let new = Arc::new(
        Policy {
            default_port: old.default_port,
            conds,
        },
        GFP_KERNEL,
    )?;
    check_chains(rules(nets, net), port, &new, abi::attr::OUT_PORT)?;
    rule_mut(nets, net, port)?.shared.set_policy(new);
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
    let old = rule.shared.policy();
    let i = cond_slot(&old, index)?;
    let mut conds = old.try_clone(0)?;
    drop(conds.remove(i));
    let new = Arc::new(
        Policy {
            default_port: old.default_port,
            conds,
        },
        GFP_KERNEL,
    )?;
    rule.shared.set_policy(new);
    Ok(())
}

/// Deletes every rule of `net`.
pub(crate) fn flush(nets: &mut Nets, net: NetRef) {
    if let Some(i) = nets.iter().position(|n| n.key == net.key()) {
        drop(nets.remove(i));
    }
    if nets.is_empty() {
        // Give the table's buffer back: statics are never dropped, so this is what frees
        // it when the module unloads (pernet exit flushes every namespace first).
        **nets = KVec::new();
    }
}
